"""Bodies as filters and validators need them: JSON recognised by content type,
content-encodings undone under a hard size cap, JSON parsed and written back
without changing a single number.

Exactness (docs/policy.md: filters: numbers keep their exact value, key order is kept):
- integers stay Python ints (exact at any size; beyond Python's 4300-digit
  str/int limit they become JsonNumber);
- every number with a fraction or exponent becomes a JsonNumber: a Decimal
  (so it compares and does arithmetic exactly) that remembers its source text,
  so `0.1`, `1.50` and `1e400` are written back byte for byte;
- `-0` is the one textual change: it is the integer 0 and is written as `0`.
Parsing uses the stdlib C parser (orjson would turn 0.1 into a binary float and
big integers into floats); writing uses orjson, ~15x faster than `json.dumps`,
with JsonNumber emitted as an `orjson.Fragment` of its text.

Refused, with JsonError: invalid UTF-8, a BOM, NaN/Infinity, lone surrogate
escapes (`"\\ud800"`, forbidden by I-JSON; nothing downstream can encode them),
anything but exactly one JSON value. Nesting deeper than MAX_DEPTH raises
JsonTooDeep — from the parser for absurd depths, and from every walker and
`dump_json` otherwise (checking depth up front would cost ~0.4 ms per 100 KB).
"""

from __future__ import annotations

import json
import re
import zlib
from decimal import Decimal
from typing import Any

import brotli
import orjson

try:  # Python 3.14 ships zstd; before that the backport (a mitmproxy dependency)
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the interpreter
    from backports import zstd  # type: ignore[no-redef]

# orjson refuses to write deeper than 254 levels; every walker stops at the same depth.
MAX_DEPTH = 254


class BodyError(ValueError):
    """A body that cannot be turned into what was asked."""


class DecodedTooLarge(BodyError):
    """Decoding would produce more than the allowed number of bytes."""


class UnsupportedEncoding(BodyError):
    """A content-encoding this module does not decode."""


class CorruptEncoding(BodyError):
    """Compressed data that does not decode (corrupt or truncated)."""


class JsonError(BodyError):
    """Not exactly one well-formed JSON value."""


class JsonTooDeep(JsonError):
    """Nested deeper than MAX_DEPTH."""


# --------------------------------------------------------------------------
# Content types


def media_type(content_type: str | None) -> str:
    """`Application/JSON; charset=utf-8` -> `application/json` ("" when absent)."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def is_json_content_type(content_type: str | None) -> bool:
    """application/json, or any type/subtype with the +json suffix (RFC 6839)."""
    mt = media_type(content_type)
    if mt == "application/json":
        return True
    kind, _, subtype = mt.partition("/")
    return bool(kind) and subtype.endswith("+json") and len(subtype) > 5


# --------------------------------------------------------------------------
# Content-encodings


def decode_content(data: bytes, content_encoding: str | None, *, limit: int) -> bytes:
    """Undo `Content-Encoding` (a comma-separated list, applied left to right,
    so undone right to left). Every stage stops as soon as its output would
    exceed `limit` bytes and raises DecodedTooLarge; memory stays within about
    twice `limit` (the output and its final copy) plus 64 KiB."""
    if not content_encoding:
        return data
    for coding in reversed([c.strip().lower() for c in content_encoding.split(",")]):
        if coding in ("", "identity"):
            continue
        decoder = _DECODERS.get(coding)
        if decoder is None:
            raise UnsupportedEncoding(f"unsupported content-encoding {coding!r}")
        data = decoder(data, limit)
    if len(data) > limit:
        raise DecodedTooLarge(f"body exceeds {limit} bytes")
    return data


# Output is produced in steps of at most this much, so memory stays within the
# cap plus one step however compressible the input is.
_STEP = 1 << 16


def _room(out: bytearray, limit: int) -> int:
    return min(limit + 1 - len(out), _STEP)  # >= 1 while len(out) <= limit (zlib reads 0 as "no limit")


def _too_large(limit: int) -> DecodedTooLarge:
    return DecodedTooLarge(f"decoded body exceeds {limit} bytes")


def _inflate(data: bytes, limit: int, wbits: int) -> bytes:
    """zlib/gzip/raw deflate, members concatenated (as `gzip -c a b` writes) allowed."""
    out = bytearray()
    rest = data
    while True:
        d = zlib.decompressobj(wbits)
        try:
            out += d.decompress(rest, _room(out, limit))
            while d.unconsumed_tail and len(out) <= limit:
                out += d.decompress(d.unconsumed_tail, _room(out, limit))
        except zlib.error as e:
            raise CorruptEncoding(f"corrupt compressed body: {e}") from None
        if len(out) > limit:
            raise _too_large(limit)
        if not d.eof:
            raise CorruptEncoding("truncated compressed body")
        rest = d.unused_data
        if not rest.strip(b"\x00"):  # padding after the last member is tolerated
            return bytes(out)
        if wbits not in (31, 47):  # only gzip has members
            raise CorruptEncoding("data after the end of the compressed body")


def _gzip(data: bytes, limit: int) -> bytes:
    return _inflate(data, limit, 31)


def _deflate(data: bytes, limit: int) -> bytes:
    # RFC 9110 "deflate" is zlib-wrapped, but some servers send raw deflate.
    try:
        return _inflate(data, limit, 15)
    except CorruptEncoding:
        return _inflate(data, limit, -15)


def _brotli(data: bytes, limit: int) -> bytes:
    d = brotli.Decompressor()
    out = bytearray()
    try:
        out += d.process(data, output_buffer_limit=_room(out, limit))
        while not d.is_finished() and len(out) <= limit:
            chunk = d.process(b"", output_buffer_limit=_room(out, limit))
            if not chunk:
                break  # it needs input we do not have: truncated
            out += chunk
    except brotli.error as e:
        raise CorruptEncoding(f"corrupt brotli body: {e}") from None
    if len(out) > limit:
        raise _too_large(limit)
    if not d.is_finished():
        raise CorruptEncoding("truncated brotli body")
    return bytes(out)


def _zstd(data: bytes, limit: int) -> bytes:
    out = bytearray()
    rest = data
    while rest:
        d = zstd.ZstdDecompressor()
        try:
            out += d.decompress(rest, _room(out, limit))
            while not d.eof and not d.needs_input and len(out) <= limit:
                out += d.decompress(b"", _room(out, limit))
        except zstd.ZstdError as e:
            raise CorruptEncoding(f"corrupt zstd body: {e}") from None
        if len(out) > limit:
            raise _too_large(limit)
        if not d.eof:
            raise CorruptEncoding("truncated zstd body")
        rest = d.unused_data  # zstd allows concatenated frames
    return bytes(out)


_DECODERS = {"gzip": _gzip, "x-gzip": _gzip, "deflate": _deflate, "br": _brotli, "zstd": _zstd}
SUPPORTED_ENCODINGS = frozenset(_DECODERS) | {"identity"}


def decodable(content_encoding: str | None) -> bool:
    """Whether `decode_content` knows every coding of a Content-Encoding header."""
    return all(c.strip().lower() in SUPPORTED_ENCODINGS or not c.strip() for c in (content_encoding or "").split(","))


# --------------------------------------------------------------------------
# JSON


class JsonNumber(Decimal):
    """A JSON number with a fraction or exponent (or a giant integer): exact
    Decimal value plus the exact source text, which is what gets written back."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:  # Decimal.__new__ already parsed `text`
        self.text = text

    def __repr__(self) -> str:
        return f"JsonNumber({self.text!r})"

    def __reduce__(self) -> tuple:  # deepcopy/pickle keep the text
        return (JsonNumber, (self.text,))


def reject_constant(name: str) -> Any:
    raise JsonError(f"{name} is not JSON")


def big_int(text: str) -> int | JsonNumber:
    try:
        return int(text)
    except ValueError:  # over sys.get_int_max_str_digits()
        return JsonNumber(text)


# A surrogate escape; only then can a parsed string hold a lone surrogate.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


# Built once: json.loads with keyword arguments builds a decoder and its scanner per
# call, which is most of the cost of parsing a small body.
_DECODER = json.JSONDecoder(parse_float=JsonNumber, parse_constant=reject_constant)


def parse_json(data: bytes | str) -> Any:
    """One JSON value, numbers exact, key order kept. Raises JsonError (or JsonTooDeep)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise JsonError(f"body is not UTF-8: {e.reason} at byte {e.start}") from None
    else:
        text = data
    try:
        doc = _DECODER.decode(text)
    except json.JSONDecodeError as e:
        raise JsonError(f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise JsonTooDeep(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except JsonError:
        raise
    except ValueError:  # an integer over Python's str->int digit limit
        try:
            doc = json.loads(text, parse_float=JsonNumber, parse_int=big_int, parse_constant=reject_constant)
        except RecursionError:
            raise JsonTooDeep(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    if _SURROGATE_ESCAPE.search(text):
        _check_unicode(doc)
    return doc


def _check_unicode(doc: Any) -> None:
    stack = [doc]
    while stack:
        node = stack.pop()
        t = type(node)
        if t is dict:
            stack.extend(node)  # keys are strings too
            stack.extend(node.values())
        elif t is list:
            stack.extend(node)
        elif t is str:
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                raise JsonError("JSON string holds a lone surrogate escape") from None


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return orjson.Fragment(obj.text if type(obj) is JsonNumber else str(obj))
    raise TypeError(f"{type(obj).__name__} is not JSON")


def dump_json(doc: Any) -> bytes:
    """Compact UTF-8 JSON. Raises JsonTooDeep past MAX_DEPTH, JsonError for
    values that are not JSON (non-string keys, lone surrogates, other types).
    (Python floats never come from parse_json; orjson writes a NaN one as null.)"""
    try:
        return orjson.dumps(doc, default=_default)
    except orjson.JSONEncodeError as e:
        message = str(e)
        if "Recursion limit" in message:
            raise JsonTooDeep(f"JSON nested deeper than {MAX_DEPTH} levels") from None
        if "64-bit" in message:  # a Python int beyond 64 bits: rare, so converted only then
            return dump_json(_wrap_big_ints(doc, 0))
        raise JsonError(f"cannot write JSON: {message}") from None


_INT_RANGE = range(-(2**63), 2**64)


def _wrap_big_ints(node: Any, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise JsonTooDeep(f"JSON nested deeper than {MAX_DEPTH} levels")
    t = type(node)
    if t is dict:
        return {k: _wrap_big_ints(v, depth + 1) for k, v in node.items()}
    if t is list:
        return [_wrap_big_ints(v, depth + 1) for v in node]
    if t is int and node not in _INT_RANGE:
        return JsonNumber(str(node))
    return node


def check_depth(doc: Any, limit: int = MAX_DEPTH) -> None:
    """Raise JsonTooDeep if `doc` nests deeper than `limit` (iterative; ~0.4 ms
    per 100 KB, so only for code that recurses without its own guard, like jsonschema)."""
    level = [doc] if type(doc) is dict or type(doc) is list else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            raise JsonTooDeep(f"JSON nested deeper than {limit} levels")
        nxt: list = []
        for node in level:
            values = node.values() if type(node) is dict else node
            nxt.extend([v for v in values if type(v) is dict or type(v) is list])
        level = nxt
