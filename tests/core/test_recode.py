import gzip
import zlib

import brotli
import pytest
from hypothesis import given, settings, strategies as st

from rr_addon.policy.bodies import decode_content, zstd
from rr_addon.core.recode import Recoder, recodable
from rr_addon.policy.scrub import replacement_pairs, scrub_bytes

SECRET = b"sk_live_123_abc"
PAIRS = replacement_pairs([SECRET.decode()], "[rr:api/live]")
ENCODE = {
    "gzip": lambda b: gzip.compress(b),
    "deflate": zlib.compress,
    "raw-deflate": lambda b: (lambda c: c.compress(b) + c.flush())(zlib.compressobj(6, zlib.DEFLATED, -15)),
    "br": brotli.compress,
    "zstd": zstd.compress,
}


def run(coding: str, chunks: list[bytes], pairs=PAIRS) -> tuple[bytes, Recoder]:
    r = Recoder(coding, pairs)
    out = []
    for c in chunks + [b""]:
        pieces = r(c)
        assert all(pieces), "an empty chunk ends a chunked HTTP/1.1 body"
        out += pieces
    return b"".join(out), r


def cut(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("kind", list(ENCODE))
@pytest.mark.parametrize("size", [1, 7, 4096])
def test_scrubbed_and_encoded_again(kind, size):
    coding = "deflate" if kind == "raw-deflate" else kind
    plain = b"header " + SECRET + b" middle " * 500 + SECRET[:5] + b" not a secret " + SECRET
    out, r = run(coding, cut(ENCODE[kind](plain), size))
    assert decode_content(out, coding, limit=10**7) == scrub_bytes(plain, PAIRS)
    assert SECRET not in decode_content(out, coding, limit=10**7)
    assert r.failed is None and r.sent == len(out)


def test_each_upstream_chunk_is_decodable_at_once():
    """A compressed event stream: what rr passes on for one chunk decodes to that chunk."""
    c = zlib.compressobj(6, zlib.DEFLATED, 31)
    r = Recoder("gzip", PAIRS)
    d = zlib.decompressobj(31)
    for i in range(3):
        event = b"data: event %d\n\n" % i
        chunk = c.compress(event) + c.flush(zlib.Z_SYNC_FLUSH)
        assert d.decompress(b"".join(r(chunk))) == event


def test_gzip_members_and_a_bomb_in_bounded_steps():
    members = gzip.compress(b"a" + SECRET) + gzip.compress(SECRET + b"b")
    out, _ = run("gzip", cut(members, 5))
    assert gzip.decompress(out) == scrub_bytes(b"a" + SECRET + SECRET + b"b", PAIRS)
    bomb = gzip.compress(b"\0" * (64 << 20))
    r = Recoder("gzip", PAIRS)
    assert max(len(b) for b in r(bomb)) < 1 << 20  # decoded 64 KiB at a time, encoded again
    r(b"")
    assert r.failed is None


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_corrupt_or_truncated_bodies_stop_and_say_why(coding):
    body = ENCODE[coding](b"x" * 10000 + SECRET)
    _, r = run(coding, [body[: len(body) // 2]])
    assert r.failed == "truncated compressed body"
    _, r = run(coding, [b"\xff" * 50 + body])
    assert r.failed is not None and r.failed.startswith(f"corrupt {coding} body")


def test_no_body_gets_no_framing():
    assert run("gzip", [])[0] == b""


@pytest.mark.parametrize(
    "header, coding",
    [("gzip", "gzip"), (" BR ", "br"), ("identity, zstd", "zstd"), ("gzip, br", None), ("compress", None), (None, None), ("", None)],
)
def test_recodable(header, coding):
    assert recodable(header) == coding


@settings(max_examples=50)
@given(st.binary(max_size=300), st.integers(0, 300), st.integers(1, 40), st.sampled_from(["gzip", "br", "zstd", "deflate"]))
def test_equals_whole_scrub(prefix, pos, size, coding):
    plain = prefix[:pos] + SECRET + prefix[pos:]
    out, _ = run(coding, cut(ENCODE[coding](plain), size))
    assert decode_content(out, coding, limit=10**6) == scrub_bytes(plain, PAIRS)


def test_on_fail_is_called_once_when_the_body_stops_decoding_while_it_streams():
    calls = []
    r = Recoder("gzip", PAIRS, on_fail=lambda: calls.append(r.failed))
    good = gzip.compress(b"x" * 100)
    r(good[:20])  # a valid start
    assert r(b"\xff" * 50) == [] and r(b"more") == [] and r(b"") == []
    assert len(calls) == 1 and calls[0].startswith("corrupt gzip body")
    t = Recoder("gzip", PAIRS, on_fail=lambda: calls.append("again"))
    t(good[:-8])
    t(b"")  # truncated is found at the end of the body, when nothing streams any more
    assert t.failed == "truncated compressed body" and calls == calls[:1]
