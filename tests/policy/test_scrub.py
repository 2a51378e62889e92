import pytest
from hypothesis import given, strategies as st

from rr_addon.policy.scrub import StreamScrubber, replacement_pairs, scrub_bytes, scrub_text

PAIRS = replacement_pairs(["sk_live_123_abc", "c2tfbGl2ZV8xMjM="], "[rr:api/live]")
M1 = b"[rr:api/live]**"  # same length as sk_live_123_abc
M2 = b"[rr:api/live]***"  # same length as the base64 form


def emitted(out) -> bytes:
    """What mitmproxy sends for one call: bytes, or a list of non-empty chunks."""
    if isinstance(out, bytes):
        assert out, "an empty chunk ends a chunked HTTP/1.1 body"
        return out
    assert all(out)
    return b"".join(out)


def stream(chunks, pairs=PAIRS):
    s = StreamScrubber(pairs)
    out = b"".join(emitted(s(c)) for c in chunks) + emitted(s(b""))
    return out, s.count


@pytest.mark.parametrize(
    "chunks, expected",
    [
        pytest.param([b"hello"], b"hello", id="nothing"),
        pytest.param([b'{"auth": "Bearer sk_live_123_abc"}'], b'{"auth": "Bearer ' + M1 + b'"}', id="whole"),
        pytest.param([b"Bearer sk_li", b"ve_123_abc end"], b"Bearer " + M1 + b" end", id="split"),
        pytest.param([b"s", b"k", b"_", b"live_", b"1", b"23", b"_abc"], M1, id="byte-by-byte"),
        pytest.param([b"sk_live_123_abcsk_live_123_abc"], M1 + M1, id="twice"),
        pytest.param([b"x c2tfbGl2ZV8xMjM= y"], b"x " + M2 + b" y", id="base64-form"),
        pytest.param([b"", b"abc", b""], b"abc", id="empty-chunks"),
    ],
)
def test_stream(chunks, expected):
    out, count = stream([c for c in chunks if c])  # b"" is the end-of-body signal
    assert out == expected
    assert count == sum(len(c) for c in chunks)


@given(st.binary(max_size=200), st.integers(0, 200), st.lists(st.integers(1, 50), max_size=20))
def test_stream_equals_whole_scrub(prefix, pos, cuts):
    data = prefix[:pos] + b"sk_live_123_abc" + prefix[pos:]
    chunks, i = [], 0
    for c in cuts:
        chunks.append(data[i : i + c])
        i += c
    chunks.append(data[i:])
    chunks = [c for c in chunks if c]
    out, _ = stream(chunks)
    assert out == scrub_bytes(data, PAIRS)
    assert b"sk_live_123_abc" not in out
    assert len(out) == len(data)


def test_text_and_no_pairs():
    assert scrub_text("a sk_live_123_abc b", PAIRS) == "a [rr:api/live]** b"
    assert stream([b"abc", b"def"], ())[0] == b"abcdef"


def test_short_secrets_are_masked_with_stars():
    assert replacement_pairs(["abc"], "[rr:api/live]") == ((b"abc", b"***"),)


def test_only_what_could_start_a_secret_is_held_back():
    s = StreamScrubber(PAIRS)
    assert emitted(s(b": ping\n\n")) == b": ping\n\n"  # an event passes at once, whole
    assert emitted(s(b"data: sk_li")) == b"data: "  # the start of a secret waits for the next chunk
    assert s(b"ve") == []  # nothing to send: no empty chunk
    assert emitted(s(b"_123_abc\n\n")) == M1 + b"\n\n"
    assert s(b"") == []
