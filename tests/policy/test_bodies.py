import gzip
import json
import zlib
from decimal import Decimal

import brotli
import pytest
from hypothesis import given, settings, strategies as st

from rr_addon.policy.bodies import (
    MAX_DEPTH,
    CorruptEncoding,
    DecodedTooLarge,
    JsonError,
    JsonNumber,
    JsonTooDeep,
    UnsupportedEncoding,
    check_depth,
    decode_content,
    dump_json,
    is_json_content_type,
    media_type,
    parse_json,
    zstd,
)


@pytest.mark.parametrize(
    "content_type, expected",
    [
        pytest.param("application/json", True, id="json"),
        pytest.param("Application/JSON; charset=utf-8", True, id="case-and-params"),
        pytest.param("application/problem+json", True, id="problem+json"),
        pytest.param("application/vnd.api+json; ext=x", True, id="vnd+json-params"),
        pytest.param("text/vnd.thing+json", True, id="any-type+json"),
        pytest.param("application/+json", False, id="bare-suffix"),
        pytest.param("application/jsonp", False, id="jsonp"),
        pytest.param("application/x-ndjson", False, id="ndjson"),
        pytest.param("text/plain", False, id="text"),
        pytest.param("json", False, id="no-slash"),
        pytest.param("", False, id="empty"),
        pytest.param(None, False, id="absent"),
    ],
)
def test_is_json_content_type(content_type, expected):
    assert is_json_content_type(content_type) is expected


def test_media_type():
    assert media_type(" Text/HTML ; charset=x") == "text/html"
    assert media_type(None) == ""


# --------------------------------------------------------------------------
# Content-encodings

BODY = b'{"hello": "world", "n": [1, 2, 3]}' * 50


def _deflate_raw(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-15)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize(
    "encoding, encoded",
    [
        pytest.param(None, BODY, id="none"),
        pytest.param("identity", BODY, id="identity"),
        pytest.param("gzip", gzip.compress(BODY), id="gzip"),
        pytest.param("x-gzip", gzip.compress(BODY), id="x-gzip"),
        pytest.param("GZIP", gzip.compress(BODY), id="gzip-upper"),
        pytest.param("gzip", gzip.compress(BODY[:100]) + gzip.compress(BODY[100:]), id="gzip-two-members"),
        pytest.param("deflate", zlib.compress(BODY), id="deflate-zlib"),
        pytest.param("deflate", _deflate_raw(BODY), id="deflate-raw"),
        pytest.param("br", brotli.compress(BODY), id="br"),
        pytest.param("zstd", zstd.compress(BODY), id="zstd"),
        pytest.param("zstd", zstd.compress(BODY[:10]) + zstd.compress(BODY[10:]), id="zstd-two-frames"),
        pytest.param("gzip, br", brotli.compress(gzip.compress(BODY)), id="gzip-then-br"),
        pytest.param("identity, gzip", gzip.compress(BODY), id="identity-listed"),
    ],
)
def test_decode(encoding, encoded):
    assert decode_content(encoded, encoding, limit=len(BODY)) == BODY


LARGE = bytes(range(256)) * 2000 + b"x" * 500_000  # several decoder steps long


@pytest.mark.parametrize(
    "encoding, compress",
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("br", brotli.compress), ("zstd", zstd.compress)],
)
def test_decode_large_bodies(encoding, compress):
    assert decode_content(compress(LARGE), encoding, limit=len(LARGE)) == LARGE


@pytest.mark.parametrize(
    "encoding, compress",
    [
        pytest.param("gzip", lambda d: gzip.compress(d, compresslevel=1), id="gzip"),
        pytest.param("deflate", lambda d: zlib.compress(d, 1), id="deflate"),
        pytest.param("br", lambda d: brotli.compress(d, quality=1), id="br"),
        pytest.param("zstd", zstd.compress, id="zstd"),
    ],
)
def test_bomb_stops_at_the_cap(encoding, compress):
    bomb = compress(b"\0" * 8_000_000)
    assert len(bomb) < 40_000  # a ratio over 200:1
    with pytest.raises(DecodedTooLarge, match="exceeds 100000 bytes"):
        decode_content(bomb, encoding, limit=100_000)


@pytest.mark.parametrize("encoding, compress", [("gzip", gzip.compress), ("br", brotli.compress), ("zstd", zstd.compress)])
def test_bomb_memory_stays_near_the_cap(encoding, compress):
    import tracemalloc

    bomb = compress(b"\0" * 8_000_000)
    tracemalloc.start()
    try:
        with pytest.raises(DecodedTooLarge):
            decode_content(bomb, encoding, limit=500_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 500_000  # never the 8 MB the bomb expands to


def test_exact_limit_is_allowed():
    assert decode_content(gzip.compress(BODY), "gzip", limit=len(BODY)) == BODY
    with pytest.raises(DecodedTooLarge):
        decode_content(gzip.compress(BODY), "gzip", limit=len(BODY) - 1)


def test_identity_body_over_limit():
    with pytest.raises(DecodedTooLarge):
        decode_content(BODY, "identity", limit=10)


@pytest.mark.parametrize(
    "encoding, data, error",
    [
        pytest.param("compress", b"x", UnsupportedEncoding, id="unknown"),
        pytest.param("gzip", b"not gzip at all", CorruptEncoding, id="gzip-garbage"),
        pytest.param("gzip", gzip.compress(BODY)[:-12], CorruptEncoding, id="gzip-truncated"),
        pytest.param("gzip", gzip.compress(BODY) + b"trailing", CorruptEncoding, id="gzip-trailing-garbage"),
        pytest.param("deflate", b"\xff\xff\xff", CorruptEncoding, id="deflate-garbage"),
        pytest.param("br", b"\xff\xff\xff\xff", CorruptEncoding, id="br-garbage"),
        pytest.param("br", brotli.compress(BODY)[:-3], CorruptEncoding, id="br-truncated"),
        pytest.param("zstd", b"\x28\xb5\x2f\xfd garbage", CorruptEncoding, id="zstd-garbage"),
        pytest.param("zstd", zstd.compress(BODY)[:-4], CorruptEncoding, id="zstd-truncated"),
    ],
)
def test_decode_errors(encoding, data, error):
    with pytest.raises(error):
        decode_content(data, encoding, limit=1 << 20)


def test_gzip_zero_padding_tolerated():
    assert decode_content(gzip.compress(BODY) + b"\0\0\0", "gzip", limit=len(BODY)) == BODY


# --------------------------------------------------------------------------
# JSON


@pytest.mark.parametrize(
    "text, written",
    [
        pytest.param("0.1", "0.1", id="decimal"),
        pytest.param("1e400", "1e400", id="beyond-double"),
        pytest.param("-1E-400", "-1E-400", id="tiny"),
        pytest.param("1.50", "1.50", id="trailing-zero"),
        pytest.param("1E+2", "1E+2", id="exponent-sign"),
        pytest.param("-0.0", "-0.0", id="minus-zero-float"),
        pytest.param("0.30000000000000004441", "0.30000000000000004441", id="many-digits"),
        pytest.param("123456789012345678901234567890", "123456789012345678901234567890", id="big-int"),
        pytest.param("-9223372036854775809", "-9223372036854775809", id="below-int64"),
        pytest.param("18446744073709551616", "18446744073709551616", id="above-uint64"),
        pytest.param("9" * 5000, "9" * 5000, id="over-python-digit-limit"),
        pytest.param("-0", "0", id="minus-zero-int"),
        pytest.param('{ "b" : 1, "a" : 2, "c" : {"z": [], "y": {}} }', '{"b":1,"a":2,"c":{"z":[],"y":{}}}', id="key-order-compact"),
        pytest.param('{"a": 1, "a": 2}', '{"a":2}', id="duplicate-key-last-wins"),
        pytest.param(r'{"\u00e9":"\u00fc","日本":"\u0000\n"}', r'{"é":"ü","日本":"\u0000\n"}', id="unicode-escapes"),
        pytest.param(r'["\ud83d\ude00", "\/"]', '["😀","/"]', id="surrogate-pair"),
        pytest.param("[true,false,null]", "[true,false,null]", id="literals"),
    ],
)
def test_round_trip(text, written):
    assert dump_json(parse_json(text)) == written.encode()


@pytest.mark.parametrize("text", ["0.1", "1e400", "1.50", "1E+2", "-0.0", "123456789012345678901234567890", "9" * 5000])
def test_numbers_are_kept_textually(text):
    assert dump_json(parse_json(f"[{text}]")) == f"[{text}]".encode()


def test_numbers_are_exact_values():
    doc = parse_json('{"a": 0.1, "b": 1e400, "c": 12345678901234567890123}')
    assert type(doc["a"]) is JsonNumber and doc["a"] == Decimal("0.1")
    assert doc["b"] > 10**399
    assert doc["c"] == 12345678901234567890123


def test_minus_zero_integer_becomes_zero():
    assert dump_json(parse_json("[-0]")) == b"[0]"


def test_bytes_and_str_input():
    assert parse_json(b'{"a":1}') == parse_json('{"a":1}') == {"a": 1}


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"{", id="unterminated"),
        pytest.param(b"[1,]", id="trailing-comma"),
        pytest.param(b"{'a': 1}", id="single-quotes"),
        pytest.param(b"NaN", id="nan"),
        pytest.param(b"[Infinity]", id="infinity"),
        pytest.param(b"[-Infinity]", id="minus-infinity"),
        pytest.param(b"1 2", id="two-values"),
        pytest.param(b"\xef\xbb\xbf{}", id="bom"),
        pytest.param(b'"\xff"', id="invalid-utf8"),
        pytest.param(b'"\\ud800"', id="lone-high-surrogate"),
        pytest.param(b'{"\\udc00": 1}', id="lone-low-surrogate-key"),
        pytest.param(b'["a\\ud83dx"]', id="broken-pair"),
        pytest.param(b'"a\x01b"', id="control-character"),
    ],
)
def test_malformed(data):
    with pytest.raises(JsonError):
        parse_json(data)


@pytest.mark.parametrize("depth", [2_000, 100_000])
def test_deep_nesting_is_refused_not_recursion_error(depth):
    with pytest.raises(JsonTooDeep):
        parse_json(b"[" * depth + b"]" * depth)
    with pytest.raises(JsonTooDeep):
        parse_json(b'{"a":' * depth + b"1" + b"}" * depth)


def _nested(depth: int) -> list:
    doc: list = []
    for _ in range(depth - 1):
        doc = [doc]
    return doc


def test_dump_depth_limit():
    assert dump_json(_nested(MAX_DEPTH)) == b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    with pytest.raises(JsonTooDeep):
        dump_json(_nested(MAX_DEPTH + 1))


def test_check_depth():
    check_depth(_nested(10), 10)
    with pytest.raises(JsonTooDeep):
        check_depth(_nested(11), 10)
    check_depth("scalar", 0)


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param({1: "a"}, id="non-string-key"),
        pytest.param([object()], id="object"),
        pytest.param(["\ud800"], id="lone-surrogate"),
    ],
)
def test_dump_refuses_non_json(doc):
    with pytest.raises(JsonError):
        dump_json(doc)


def test_dump_big_python_ints_and_decimals():
    assert dump_json({"a": 2**70, "b": [-(2**64)], "c": Decimal("1.10")}) == b'{"a":1180591620717411303424,"b":[-18446744073709551616],"c":1.10}'


def test_json_number_survives_copy():
    import copy
    import pickle

    n = JsonNumber("1E+2")
    assert copy.deepcopy(n).text == "1E+2"
    assert pickle.loads(pickle.dumps(n)).text == "1E+2"
    assert repr(n) == "JsonNumber('1E+2')"


json_numbers = st.from_regex(r"-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,20})?([eE][+-]?[0-9]{1,4})?", fullmatch=True)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None)
@given(st.lists(json_numbers, max_size=5))
def test_number_text_round_trip_property(numbers):
    text = "[" + ",".join(n for n in numbers if n != "-0") + "]"
    assert dump_json(parse_json(text)) == text.encode()


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_round_trip_property(value):
    text = json.dumps(value, ensure_ascii=False, indent=1)
    assert dump_json(parse_json(text.encode())) == json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
