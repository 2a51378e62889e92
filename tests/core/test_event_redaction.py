"""Event-stream redaction (rr_addon.core.event_redaction): event by event, whatever the chunking."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest
from hypothesis import given, strategies as st

from rr_addon.core.event_redaction import EVENT_NOT_JSON, EVENT_TOO_LARGE, EventRedactor, event_stage
from rr_addon.policy.filters import compile_filter
from rr_addon.core.recode import IDENTITY, Recoder
from rr_addon.policy.redact import BUILTIN, MASK, Redactor
from rr_addon.core.responses import Pipeline
from rr_addon.policy.scrub import replacement_pairs
from rr_addon.core.sse import events

EMAIL = Redactor([(BUILTIN["email"], MASK)], b"k")
PAIRS = replacement_pairs(["sk_live_SECRET123"], "[rr:api/live]")

OPENAI = [
    b": keep-alive\n\n",
    b'data: {"choices":[{"delta":{"content":"write to alice@example.com"}}]}\n\n',
    b'data: {"choices":[{"delta":{"content":" thanks"}}]}\n\n',
    b"data: [DONE]\n\n",
]


def run(stage, pieces: list[bytes]) -> bytes:
    out = b""
    for p in pieces + [b""]:
        got = stage(p)
        out += b"".join(got) if isinstance(got, list) else got
    return out


def cut(body: bytes, points: list[int]) -> list[bytes]:
    points = sorted({p for p in points if 0 < p < len(body)})
    return [body[a:b] for a, b in zip([0] + points, points + [len(body)])]


def test_json_events_are_redacted_as_documents_and_untouched_events_stay_byte_for_byte():
    out = run(EventRedactor(EMAIL, (), (), 1 << 20), OPENAI)
    assert out == (
        b": keep-alive\n\n"
        b'data: {"choices":[{"delta":{"content":"write to [REDACTED:EMAIL]"}}]}\n\n'
        b'data: {"choices":[{"delta":{"content":" thanks"}}]}\n\n'
        b"data: [DONE]\n\n"
    )


def test_text_events_and_other_fields_are_redacted_as_text_line_by_line():
    body = b"event: mail bob@example.org\r\nid: 7\r\ndata: to carol@example.net\r\ndata: second line\r\n\r\n"
    stage = EventRedactor(EMAIL, (), (), 1 << 20)
    out = run(stage, [body])
    assert out == b"event: mail [REDACTED:EMAIL]\nid: 7\ndata: to [REDACTED:EMAIL]\ndata: second line\n\n"
    assert stage.counts == {"email": 2}


@given(st.lists(st.integers(min_value=1, max_value=400), max_size=12))
def test_any_chunking_gives_the_same_events(points):
    body = b"".join(OPENAI) + b"data: dave@example.com is\ndata: split\n\n"
    whole = run(EventRedactor(EMAIL, (), PAIRS, 1 << 20), [body])
    assert run(EventRedactor(EMAIL, (), PAIRS, 1 << 20), cut(body, points)) == whole
    assert b"@example" not in whole


def test_an_event_passes_as_soon_as_its_blank_line_arrives():
    stage = EventRedactor(EMAIL, (), (), 1 << 20)
    assert stage(b'data: {"a": "x@example.com"}\n') == []  # the event is not complete yet
    assert stage(b"\n") == [b'data: {"a":"[REDACTED:EMAIL]"}\n\n']


def test_echoed_secrets_are_scrubbed_in_every_part_also_json_escaped():
    body = b'id: sk_live_SECRET123\ndata: {"k": "\\u0073k_live_SECRET123"}\n\n: sk_live_SECRET123\n\n'
    out = run(EventRedactor(None, (compile_filter(destroy_paths=["$.nothing"]),), PAIRS, 1 << 20), cut(body, [5, 9, 30]))
    assert b"SECRET123" not in out and b"\\u0073" not in out
    assert out.count(b"[rr:api/live]") == 3


def test_filters_apply_to_each_json_event_and_a_non_json_event_ends_the_stream():
    drop = compile_filter(destroy_paths=["$.secret_field"])
    stage = EventRedactor(None, (drop,), (), 1 << 20, request_id="r1")
    out = run(stage, [b'data: {"ok": 1, "secret_field": 2}\n\n', b"data: [DONE]\n\n", b"data: free text\n\n", b'data: {"ok": 3}\n\n'])
    first, done, error = out.split(b"\n\n")[:3]
    assert first == b'data: {"ok":1}' and done == b"data: [DONE]"
    assert error.startswith(b"event: error\ndata: ")
    assert json.loads(error.split(b"data: ", 1)[1])["error"] == {"code": "unfilterable-response", "message": EVENT_NOT_JSON, "request_id": "r1"}
    assert stage.failed == EVENT_NOT_JSON and b'"ok":3' not in out


def test_an_event_over_the_limit_ends_the_stream_and_nothing_of_it_passes():
    stage = EventRedactor(EMAIL, (), (), 64)
    out = run(stage, [b"data: short\n\n", b"data: " + b"a" * 40, b"b" * 40 + b" x@example.com\n\n", b"data: after\n\n"])
    assert out.startswith(b"data: short\n\nevent: error\n")
    assert stage.failed == EVENT_TOO_LARGE and b"aaaa" not in out and b"after" not in out


def test_an_unfinished_last_event_is_passed_redacted_without_dispatching_it():
    out = run(EventRedactor(EMAIL, (), (), 1 << 20), [b"data: done\n\ndata: eve@example.com"])
    assert out == b"data: done\n\ndata: [REDACTED:EMAIL]\n"
    assert events(out, 1 << 20)[0] == [b"done"]


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd", IDENTITY])
def test_a_compressed_stream_is_decoded_redacted_and_encoded_again_event_by_event(coding):
    from rr_addon.testing.upstream import encode

    body = b"".join(OPENAI)
    encoded = body if coding == IDENTITY else encode(body, coding)
    recoder = Recoder(coding, PAIRS, stage=EventRedactor(EMAIL, (), PAIRS, 1 << 20))
    pieces = [recoder(encoded[i : i + 7]) for i in range(0, len(encoded), 7)] + [recoder(b"")]
    out = b"".join(b"".join(p) for p in pieces)
    if coding in ("gzip", "deflate"):
        out = zlib.decompressobj(31 if coding == "gzip" else 15).decompress(out)
    elif coding == "br":
        import brotli

        out = brotli.decompress(out)
    elif coding == "zstd":
        from rr_addon.policy.bodies import decode_content

        out = decode_content(out, "zstd", limit=1 << 20)
    assert b"alice@example.com" not in out and b"[REDACTED:EMAIL]" in out and out.endswith(b"data: [DONE]\n\n")


def test_a_refusing_stage_stops_the_recoder_after_its_error_event():
    failed = []
    recoder = Recoder(IDENTITY, (), on_fail=lambda: failed.append(1), stage=EventRedactor(None, (compile_filter(destroy_paths=["$.x"]),), (), 1 << 20))
    out = recoder(b"data: nope\n\n")
    assert b"".join(out).startswith(b"event: error\n") and recoder.failed == EVENT_NOT_JSON and failed == [1]
    assert recoder(b'data: {"x": 1}\n\n') == [] and recoder(b"") == []
    assert gzip  # (imported for the reader: gzip is among the codings above)


def test_event_stage_only_for_event_streams_that_redaction_or_filters_apply_to():
    drop = compile_filter(destroy_paths=["$.x"])
    assert event_stage(Pipeline(response_redactor=EMAIL), 200, "text/event-stream; charset=utf-8", (), 10, "r") is not None
    assert event_stage(Pipeline(filters=(drop,)), 200, "text/event-stream", (), 10, "r") is not None
    assert event_stage(Pipeline(filters=(drop,)), 500, "text/event-stream", (), 10, "r") is None  # filters: 2xx only
    assert event_stage(Pipeline(response_redactor=EMAIL), 200, "application/json", (), 10, "r") is None
    assert event_stage(Pipeline(), 200, "text/event-stream", (), 10, "r") is None


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(b'data: {"a":"alice@example.com","a":"x"}\n\n', id="email-under-a-duplicate-key"),
        pytest.param(b'data: {"a":"sk_live_SECRET12\\u0033","a":"x"}\n\n', id="escaped-secret-under-a-duplicate-key"),
    ],
)
def test_a_value_the_json_parse_drops_is_not_passed_on_raw(event):
    # a hostile upstream: the parse keeps the last duplicate, so redaction sees nothing,
    # but the raw event still carries the first value to a client that reads it
    out = run(EventRedactor(EMAIL, (), PAIRS, 1 << 20), [event])
    assert out == b'data: {"a":"x"}\n\n'
