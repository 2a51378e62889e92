"""response_value meters on event streams and unmeasured responses (core.quota)."""

from __future__ import annotations

import io
import json

from rich.console import Console

from rr_addon.cli.render import usage_table
from rr_addon.core.quota import NO_VALUE, NOT_JSON, STREAM_BROKEN, TOO_LARGE, Measurement
from rr_addon.policy.scrub import StreamScrubber, replacement_pairs
from rr_addon.testing.upstream import sse_events

from tests.core.test_meters import NOW, Counts, meters
from tests.policy.test_scrub import emitted

TOTAL = {"name": "total", "type": "response_value", "response_value": {"json_path": "$.usage.total_tokens"}, "limits": {"day": 100}}
INPUT = {"name": "input", "type": "response_value", "response_value": {"json_path": "$.message.usage.input_tokens"}}
OUTPUT = {"name": "output", "type": "response_value", "response_value": {"json_path": "$.usage.output_tokens"}}
HEADER = {"name": "hdr", "type": "response_value", "response_value": {"header": "x-tokens"}}


def measure(pm, chunks, headers=None, *, broken=False, limit=1 << 20):
    reader = pm.plan("c1", None, NOW).events(headers or {}, limit)
    for c in chunks:
        assert reader(c) is None  # a tap: it never hands back bytes
    return reader.result(broken=broken)


def test_openai_usage_in_the_final_chunk():
    body = b"".join(sse_events("openai", {"prompt": "30", "completion": "12"}))
    m = measure(meters(TOTAL), [body[i : i + 7] for i in range(0, len(body), 7)])
    assert m == Measurement({"total": 42}, {})


def test_anthropic_input_from_message_start_output_from_the_last_message_delta():
    events = sse_events("anthropic", {"input": "25", "output": "9"})
    # a second, later message_delta: its count is cumulative, so it replaces (never adds to) the first
    events.insert(-1, b'event: message_delta\ndata: {"type": "message_delta", "usage": {"output_tokens": 17}}\n\n')
    m = measure(meters(INPUT, OUTPUT), [e.replace(b"\n", b"\r\n") for e in events])
    assert m == Measurement({"input": 25, "output": 17}, {})


def test_unmeasured_reasons():
    plain = sse_events("plain", {})
    assert measure(meters(TOTAL), plain) == Measurement({}, {"total": NOT_JSON})
    assert measure(meters(TOTAL), [b'data: {"usage": {}}\n\n']) == Measurement({}, {"total": NO_VALUE})
    openai = sse_events("openai", {"prompt": "1", "completion": "2"})
    # broken after the usage chunk: the value seen counts, and the response is marked partial
    assert measure(meters(TOTAL), openai[:-1], broken=True) == Measurement({"total": 3}, {"total": STREAM_BROKEN})
    assert measure(meters(TOTAL), openai[:2], broken=True) == Measurement({}, {"total": STREAM_BROKEN})
    big = b'data: {"pad": "' + b"x" * 1000 + b'"}\n\n'
    assert measure(meters(TOTAL), [openai[-2], big], limit=400) == Measurement({"total": 3}, {"total": TOO_LARGE})


def test_header_meters_read_the_headers_of_a_stream():
    pm = meters(HEADER, TOTAL)
    assert measure(pm, [b"data: x\n\n"], {"x-tokens": "5"}) == Measurement({"hdr": 5}, {"total": NOT_JSON})
    assert measure(pm, [], {}) == Measurement({}, {"hdr": NO_VALUE, "total": NOT_JSON})


def test_settle_counts_values_and_unmeasured_responses_per_window():
    pm = meters(TOTAL, INPUT)
    plan = pm.plan("c1", None, NOW)
    counts = Counts()
    counts.add(plan.settle(Measurement({"total": 40}, {"input": NOT_JSON})))
    counts.add(plan.settle(Measurement({}, {"total": STREAM_BROKEN, "input": NO_VALUE})))
    assert counts.c["meter:agent:total:-:day:2026-11-28"] == 40
    assert counts.c["unmeasured:agent:total:-:day:2026-11-28"] == 1
    assert counts.c["unmeasured:agent:input:-:month:2026-11"] == 2
    assert "meter:agent:input:-:day:2026-11-28" not in counts.c
    rows = {(r.meter, r.window.kind): r for r in pm.usage_rows(["c1"], counts.c, NOW)}
    assert (rows[("total", "day")].used, rows[("total", "day")].unmeasured) == (40, 1)
    assert rows[("input", "minute")].unmeasured == 2
    assert rows[(None, "day")].unmeasured is None  # not a response_value meter
    console = Console(width=200, record=True, color_system=None, file=io.StringIO())
    console.print(usage_table(list(rows.values()), NOW))
    table = console.export_text().splitlines()
    assert "unmeasured" in table[2]
    assert [line.split()[-2] for line in table if "│ total" in line and "day" in line] == ["1"]


def test_measure_a_whole_body():
    plan = meters(TOTAL, HEADER).plan("c1", None, NOW)
    assert plan.measure({"x-tokens": "2"}, b'{"usage": {"total_tokens": 9}}') == Measurement({"total": 9, "hdr": 2}, {})
    assert plan.measure({}, b"<html>") == Measurement({}, {"total": NOT_JSON, "hdr": NO_VALUE})
    assert plan.measure({"x-tokens": "1"}, None, failed=TOO_LARGE) == Measurement({"hdr": 1}, {"total": TOO_LARGE})
    assert plan.measure({}, json.loads('{"usage": null}')) == Measurement({}, {"total": NO_VALUE, "hdr": NO_VALUE})


def test_the_tap_sees_what_the_upstream_sent_and_the_client_gets_it_scrubbed():
    secret = "sk_live_0123456789"
    body = b'data: {"echo": "' + secret.encode() + b'", "usage": {"total_tokens": 4}}\n\n'
    reader = meters(TOTAL).plan("c1", None, NOW).events({}, 1 << 20)
    scrubber = StreamScrubber(replacement_pairs([secret], "[rr:api/live]"), tap=reader)
    out = b"".join(emitted(scrubber(body[i : i + 5])) for i in range(0, len(body), 5)) + emitted(scrubber(b""))
    assert secret.encode() not in out and len(out) == len(body) and scrubber.count == len(body)
    assert reader.result() == Measurement({"total": 4}, {})
