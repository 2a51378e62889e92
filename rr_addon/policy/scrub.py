"""Scrubbing injected secrets out of what an upstream sends back (docs/security.md).

An upstream that echoes a request (debug endpoints, error pages) would hand
the caller the secret rr injected. `StreamScrubber` replaces every secret while
the body streams, holding back only the end of a chunk that could be the start
of a secret, so a secret split across chunks is still caught, nothing else is
buffered, and a chunk that ends an event or a line (which no secret starts
with) passes at once.

An echo is rarely byte for byte: JSON encoders write `/` as `\\/` or any
character as `\\u002f`, URLs carry `%2F`, HTML pages `&#47;`. So the text is
also read the way a client would decode it — JSON `\\uXXXX` (surrogate pairs
included) and short escapes (`\\/`, `\\"`, `\\\\`, `\\n`…), percent-encoded
bytes, HTML character references (decimal, hex, the named five) — and a
secret found there is masked over the whole span that spells it, escapes
mixed freely with literal characters. `+` for a space is matched too. A
transformed secret (base64 of it, reversed, cut over two fields) is not
recognised: a target whose API echoes such a transformation should be kept
from callers by a rule.

A held tail waits for the next chunk or the end of the body; it is never
released on a timer. Releasing it would hand the caller the start of the
secret — all but its last byte, if an upstream (or a caller steering an echo
endpoint) pauses there — and the guarantee is that no part of it leaves.
Streams of events and lines never pay for this; a byte stream pays only when
a chunk happens to end with what could begin a spelling of a secret.

The replacement has the length of what it replaces — the placeholder padded
with '*' (`[rr:api/live]*****`), or only '*' for secrets shorter than the
placeholder — so a streamed body keeps the Content-Length the upstream
announced.
"""

from __future__ import annotations

import functools
from bisect import bisect_right
from typing import Callable, Iterable

import re2


def mask(secret: bytes, placeholder: bytes) -> bytes:
    n = len(secret)
    return (placeholder + b"*" * n)[:n] if n >= len(placeholder) else b"*" * n


def replacement_pairs(secrets: Iterable[str], placeholder: str) -> tuple[tuple[bytes, bytes], ...]:
    ph = placeholder.encode()
    pairs = {s.encode(): mask(s.encode(), ph) for s in secrets if s}
    # longest first, so a secret that contains another is replaced whole
    return tuple(sorted(pairs.items(), key=lambda kv: len(kv[0]), reverse=True))


Pairs = tuple[tuple[bytes, bytes], ...]


def _latin1() -> re2.Options:
    options = re2.Options()
    options.encoding = re2.Options.Encoding.LATIN1  # bytes in, bytes out: no UTF-8 validation
    return options


# One escaped character each (a percent-encoded byte is one unit, so a match never starts or
# ends inside a unit). Groups, by `lastindex`: 2 surrogate pair, 3 \uXXXX, 4 short JSON escape,
# 5 %XX, 6 &#xH;, 7 &#D;, 8 a named reference.
_UNIT = re2.compile(
    rb"\\u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})|\\u([0-9a-fA-F]{4})"
    rb'|\\(["\\/bfnrt])|%([0-9a-fA-F]{2})|&#[xX]([0-9a-fA-F]{1,6});|&#([0-9]{1,7});|&(amp|lt|gt|quot|apos);',
    _latin1(),
)
# The end of a text that could begin one such unit (over-holding a few bytes until the next
# chunk is harmless; under-holding would let the start of a secret out).
_PARTIAL_UNIT = re2.compile(
    rb"(?:\\u[dD][89abAB][0-9a-fA-F]{2})?\\(?:u[0-9a-fA-F]{0,3})?\z|\\u[dD][89abAB][0-9a-fA-F]{2}\z"
    rb"|%[0-9a-fA-F]?\z|&(?:#[xX]?[0-9a-fA-F]{0,7}|[a-zA-Z]{0,4})\z",
    _latin1(),
)
_SHORT = {b'"': b'"', b"\\": b"\\", b"/": b"/", b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t"}
_NAMED = {b"amp": b"&", b"lt": b"<", b"gt": b">", b"quot": b'"', b"apos": b"'"}
_LONGEST_UNIT = 12  # `\\uD83D\\uDE00`, `&#x01F600;` (leading zeros beyond that are not decoded)


def _char(cp: int) -> bytes:
    return chr(cp).encode("utf-8", "surrogatepass") if cp <= 0x10FFFF else b""


def _decode(m) -> bytes:
    i = m.lastindex
    if i == 2:
        hi, lo = int(m.group(1), 16), int(m.group(2), 16)
        return _char(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
    if i == 3:
        return _char(int(m.group(3), 16))
    if i == 4:
        return _SHORT[m.group(4)]
    if i == 5:
        return bytes((int(m.group(5), 16),))
    if i == 6:
        return _char(int(m.group(6), 16))
    if i == 7:
        return _char(int(m.group(7)))
    return _NAMED[m.group(8)]


class _Decoded:
    """`data` read the way a client decodes it, with a map from its offsets back to `data`'s.
    Decoded units are atomic: a span of the decoded text maps to whole units."""

    __slots__ = ("text", "starts", "units")

    def __init__(self, data: bytes):
        parts: list[bytes] = []
        self.starts: list[int] = []  # decoded offset of each unit
        self.units: list[tuple[int, int, int]] = []  # (original start, original end, decoded length)
        at = out = 0
        for m in _UNIT.finditer(data):
            start, end = m.span()
            if start > at:
                parts.append(data[at:start])
                out += start - at
            piece = _decode(m)
            parts.append(piece)
            self.starts.append(out)
            self.units.append((start, end, len(piece)))
            out += len(piece)
            at = end
        parts.append(data[at:])
        self.text = b"".join(parts)

    def original(self, offset: int, end: bool) -> int:
        """The offset in the original data of decoded `offset` (a start, or an exclusive end)."""
        i = bisect_right(self.starts, offset - 1 if end else offset) - 1
        if i < 0:
            return offset
        start, stop, length = self.units[i]
        inside = offset - self.starts[i]
        if inside < length or (end and inside == length):
            return stop if end else start
        return stop + inside - length


def _forms(pairs: Pairs) -> list[tuple[bytes, bytes]]:
    """Each secret, and each with '+' for its spaces (a form-encoded echo)."""
    forms = list(pairs)
    forms.extend((secret.replace(b" ", b"+"), mask) for secret, mask in pairs if b" " in secret)
    return forms


def _hex(value: int, width: int) -> bytes:
    """A regex for `value` in hex, each letter in either case."""
    return b"".join(b"[" + c.lower().encode() + c.upper().encode() + b"]" if c.isalpha() else c.encode() for c in f"{value:0{width}x}")


def _spellings(ch: str) -> bytes:
    """A regex for one character written any way `_UNIT` decodes, or as itself."""
    raw = ch.encode("utf-8", "surrogatepass")
    cp = ord(ch)
    forms = [re2.escape(raw), b"".join(b"%" + _hex(b, 2) for b in raw), b"&#0*" + str(cp).encode() + b";", b"&#[xX]0*" + _hex(cp, 1) + b";"]
    if cp <= 0xFFFF:
        forms.append(rb"\\u" + _hex(cp, 4))
    else:
        hi, lo = 0xD800 + ((cp - 0x10000) >> 10), 0xDC00 + ((cp - 0x10000) & 0x3FF)
        forms.append(rb"\\u" + _hex(hi, 4) + rb"\\u" + _hex(lo, 4))
    forms.extend(re2.escape(b"\\" + short) for short, decoded in _SHORT.items() if decoded == raw)
    forms.extend(b"&" + name + b";" for name, decoded in _NAMED.items() if decoded == raw)
    return b"(?:" + b"|".join(forms) + b")"


_ANCHOR = 6  # characters of a secret that locate a candidate spelling natively


class _Secrets:
    """What scrubbing one set of pairs needs, built once per set (`_compiled`)."""

    __slots__ = ("forms", "starts", "longest", "alphabet")

    def __init__(self, pairs: Pairs):
        self.forms = _forms(pairs)
        texts = [secret.decode("utf-8", "surrogatepass") for secret, _ in self.forms]
        # where a spelled secret could begin: its first few characters, each spelled any way
        self.starts = re2.compile(b"|".join(b"".join(_spellings(c) for c in t[:_ANCHOR]) for t in texts), _latin1())
        self.longest = max(len(secret) for secret, _ in self.forms) * _LONGEST_UNIT
        # every byte that can occur in a spelling of a secret: anything else ends a held tail
        syntax = b"\\u%&#xX;0123456789abcdefABCDEF" + b"".join(_SHORT) + b"".join(_NAMED)
        allowed = sorted(set(syntax + b"".join(secret for secret, _ in self.forms)))
        self.alphabet = re2.compile(b"[" + b"".join(b"\\x%02x" % c for c in allowed) + b"]+\\z", _latin1())


@functools.lru_cache(maxsize=256)
def _compiled(pairs: Pairs) -> _Secrets:
    return _Secrets(pairs)


def _may_escape(data: bytes) -> bool:
    return b"\\" in data or b"%" in data or b"&" in data


def _escaped(data: bytes, i: int) -> bool:
    """Whether the byte at `i` follows an odd run of backslashes (it is part of an escape)."""
    n = 0
    while i > n and data[i - n - 1] == 0x5C:
        n += 1
    return n % 2 == 1


def _stretch(mask: bytes, n: int) -> bytes:
    return mask + b"*" * (n - len(mask))


def scrub_bytes(data: bytes, pairs: Pairs) -> bytes:
    if not pairs or not data:
        return data
    secrets = _compiled(pairs)
    for secret, mask in secrets.forms:  # literal spellings first, as they stand (a secret may hold a '%41')
        if secret in data:
            data = data.replace(secret, mask)
    if not _may_escape(data):
        return data
    spans, at = [], 0
    for m in secrets.starts.finditer(data):  # rare: where the first characters are spelled out
        start = m.start()
        if start < at or _escaped(data, start):
            continue
        decoded = _Decoded(data[start : start + secrets.longest])
        for secret, mask in secrets.forms:
            if decoded.text.startswith(secret):
                at = start + decoded.original(len(secret), True)
                spans.append((start, at, mask))
                break
    if not spans:
        return data
    out, at = [], 0
    for start, end, mask in spans:
        out.append(data[at:start])
        out.append(_stretch(mask, end - start))
        at = end
    out.append(data[at:])
    return b"".join(out)


def scrub_text(text: str, pairs: Pairs) -> str:
    data = text.encode("utf-8", "surrogatepass")
    out = scrub_bytes(data, pairs)
    return text if out == data else out.decode("utf-8", "surrogatepass")


def _prefix_end(text: bytes, forms) -> int:
    """How many bytes at the end of `text` begin one of the secrets (0: none)."""
    best, last = 0, text[-1:]
    if not last:
        return 0
    for secret, _ in forms:
        k = secret.rfind(last, 0, min(len(secret) - 1, len(text)))
        while k + 1 > best:
            if text.endswith(secret[: k + 1]):
                best = k + 1
                break
            k = secret.rfind(last, 0, k)
    return best


def held_back(data: bytes, pairs: Pairs) -> int:
    """The length of the longest end of `data` that could begin a spelling of a secret."""
    secrets = _compiled(pairs)
    window = data[-(secrets.longest + _LONGEST_UNIT) :]
    run = secrets.alphabet.search(window)  # the end made only of bytes a spelling can hold
    if run is None:
        return 0
    tail = window[run.start() :]
    if not _may_escape(tail):
        return _prefix_end(tail, secrets.forms)
    partial = _PARTIAL_UNIT.search(tail)
    cut = partial.start() if partial else len(tail)  # an escape begun at the very end
    decoded = _Decoded(tail[:cut])
    best = _prefix_end(decoded.text, secrets.forms)
    start = decoded.original(len(decoded.text) - best, False) if best else cut
    return len(tail) - start


class StreamScrubber:
    """A mitmproxy `response.stream` callable: scrubs and counts bytes.

    `tap`, if given, sees each chunk as the upstream sent it, before scrubbing
    (a meter reading an event stream: it measures what the upstream sent, the
    client receives the scrubbed bytes). It returns nothing and cannot change them."""

    __slots__ = ("pairs", "tail", "count", "tap")

    def __init__(self, pairs: tuple[tuple[bytes, bytes], ...], tap: Callable[[bytes], None] | None = None):
        self.pairs = pairs
        self.tail = b""
        self.count = 0
        self.tap = tap

    def __call__(self, chunk: bytes) -> bytes | list[bytes]:
        # Never hand mitmproxy an empty chunk mid-body: on a chunked HTTP/1.1 response
        # an empty data event is written as the terminating "0\r\n\r\n", so the
        # caller would see the body end early. ([] is "nothing to send".)
        self.count += len(chunk)
        if self.tap is not None:
            self.tap(chunk)
        if not chunk:  # end of the body: what is held back can no longer complete a secret
            out, self.tail = scrub_bytes(self.tail, self.pairs), b""
            return out or []
        if not self.pairs:
            return chunk
        data = scrub_bytes(self.tail + chunk, self.pairs)
        held = self._held(data)
        self.tail = data[len(data) - held :] if held else b""
        return data[: len(data) - held] or []

    def _held(self, data: bytes) -> int:
        return held_back(data, self.pairs)
