"""The incremental text/event-stream parser: events come out the same however the body is cut."""

from __future__ import annotations

import random

import pytest

from rr_addon.core.sse import EventParser, LineSplitter, events

STREAM = (
    b": keep-alive\n\n"
    b"event: message_start\n"
    b'data: {"a": 1}\n\n'
    b"data: first line\n"
    b"data:second line\n"
    b"data\n"
    b"id: 7\n"
    b"retry: 100\n\n"
    b"data: [DONE]\n\n"
    b"event: no-data\n\n"
    b"data: unterminated"
)
EXPECTED = [b'{"a": 1}', b"first line\nsecond line\n", b"[DONE]"]


def feed_all(parser: EventParser, pieces) -> list[bytes]:
    out: list[bytes] = []
    for p in pieces:
        out += parser.feed(p)
    return out + parser.feed(b"")


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_whole_body(eol):
    body = STREAM.replace(b"\n", eol)
    assert events(body, 1 << 20) == (EXPECTED, False)


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_every_cut_into_two_and_byte_by_byte(eol):
    body = STREAM.replace(b"\n", eol)
    for i in range(len(body) + 1):
        assert feed_all(EventParser(1 << 20), [body[:i], body[i:]]) == EXPECTED, i
    assert feed_all(EventParser(1 << 20), [body[i : i + 1] for i in range(len(body))]) == EXPECTED


def test_random_cuts_with_mixed_line_ends():
    rng = random.Random(13)
    body = b"data: a\r\ndata: b\rdata: c\n\r\n" b'data: {"n": 2}\r\r' b"data: x\n\n"
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, len(body)), rng.randint(1, 8)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)])]
        assert feed_all(EventParser(1 << 20), pieces) == [b"a\nb\nc", b'{"n": 2}', b"x"]


def test_crlf_split_between_chunks_is_one_line_end():
    p = EventParser(100)
    assert p.feed(b"data: a\r") == []
    assert p.feed(b"\n\r") == [b"a"]  # CR LF ended the data line; the next CR is the blank line
    assert p.feed(b"\ndata: b\n\n") == [b"b"]  # that CR's LF adds no second blank line


def test_comments_and_other_fields_never_make_an_event():
    assert events(b": ping\n\nevent: x\nid: 1\n\n:data: no\n\n", 100) == ([], False)


def test_a_leading_bom_is_ignored_once():
    bom = b"\xef\xbb\xbf"
    assert feed_all(EventParser(100), [bom[:2], bom[2:] + b"data: a\n\n" + bom + b"data: b\n\n"]) == [b"a"]


def test_one_event_over_the_limit_stops_the_parser():
    p = EventParser(16)
    assert p.feed(b"data: 0123456789\n\n") == [b"0123456789"]
    assert p.feed(b"data: 0123456789\ndata: 0123456789\n\n") == []
    assert p.over
    assert p.feed(b"data: small\n\n") == []  # nothing after the overflow is trusted


def test_a_line_without_end_is_bounded_too():
    p = EventParser(1000)
    for _ in range(20):
        p.feed(b"x" * 100)
    assert p.over and len(p._lines.pending) == 0


def test_the_line_splitter_shared_by_parser_and_redactor():
    """CRLF cut between chunks is one line end, a BOM opens only the first line,
    and the unended line is held in `pending` and handed over as sent."""
    s = LineSplitter()
    got = list(s.lines(b"\xef\xbb\xbfa\r")) + list(s.lines(b"\nb\n\xef\xbb\xbfc\rd"))
    assert got == [b"a", b"b", b"\xef\xbb\xbfc"]
    assert bytes(s.pending) == b"d"
    assert list(s.lines(b"e")) == [] and s.take_pending() == b"de" and not s.pending
