"""Scrubbing injected secrets out of what an upstream sends back (docs/security.md).

An upstream that echoes a request (debug endpoints, error pages) would hand
the caller the secret rr injected. `StreamScrubber` replaces every secret while
the body streams, holding back only the end of a chunk that could be the start
of a secret, so a secret split across chunks is still caught, nothing else is
buffered, and a chunk that ends an event or a line (which no secret starts
with) passes at once.

An echo is rarely byte for byte: JSON encoders write `/` as `\\/` or any
character as `\\u002f`, URLs carry `%2F`, HTML pages `&#47;` or `&sol;`. So each
character of a secret is matched in every spelling a standard encoder
produces, mixed freely: literal; JSON `\\uXXXX` (either hex case, surrogate
pairs beyond U+FFFF) and the short escapes (`\\/`, `\\"`, `\\\\`, `\\n`…), also
escaped a second time (JSON inside a JSON string); percent-encoding of its
UTF-8 bytes (either hex case, `+` for a space); HTML character references
(decimal or hex with any leading zeros, every HTML5 name). One RE2 program per
set of secrets does it in one native pass. The mask covers the whole spelling.
A transformed secret (base64 of it, reversed, cut over two fields) is not
recognised: a target whose API echoes such a transformation should be kept
from callers by a rule. Text that only looks like an escaped secret (`\\\\u0073…`,
an escaped backslash before `u0073`) is masked too: over-masking is the safe
side.

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
import html.entities
from typing import Callable, Iterable

import re2


def mask(secret: bytes, placeholder: bytes) -> bytes:
    n = len(secret)
    return (placeholder + b"*" * n)[:n] if n >= len(placeholder) else b"*" * n


class Pairs(tuple):
    """(secret, mask) byte pairs, longest secret first. It keeps the RE2 programs that match
    their spellings once they are built (`_compiled`), so they live as long as the
    configuration that made them; a copy or a pickle leaves them behind."""

    compiled: "_Secrets | None" = None

    def __reduce__(self):
        return (Pairs, (tuple(self),))


def replacement_pairs(secrets: Iterable[str], placeholder: str) -> Pairs:
    ph = placeholder.encode()
    pairs = {s.encode(): mask(s.encode(), ph) for s in secrets if s}
    # longest first, so a secret that contains another is replaced whole
    return Pairs(sorted(pairs.items(), key=lambda kv: len(kv[0]), reverse=True))

_SHORT = {'"': '"', "\\": "\\", "/": "/", "\b": "b", "\f": "f", "\n": "n", "\r": "r", "\t": "t"}
_HTML_NAMES: dict[str, list[str]] = {}
for _name, _text in html.entities.html5.items():
    if len(_text) == 1:
        _HTML_NAMES.setdefault(_text, []).append(_name)
# The end of a text that could begin one escape, whichever character it spells (over-holding a
# few bytes until the next chunk is harmless; under-holding would let the start of a secret out).
_PARTIAL = (
    rb"\\{1,3}(?:u[0-9a-fA-F]{0,3})?"
    rb"|\\{1,2}u[dD][89abAB][0-9a-fA-F]{2}(?:\\{1,2}(?:u[0-9a-fA-F]{0,3})?)?"  # a high surrogate, the low one to come
    rb"|(?:%[0-9a-fA-F]{2}){0,3}%[0-9a-fA-F]?|(?:%[0-9a-fA-F]{2}){1,3}"  # one UTF-8 sequence, percent-encoded
    rb"|&(?:#(?:[xX][0-9a-fA-F]*|[0-9]*)|[a-zA-Z][a-zA-Z0-9]*)?"
    rb"|[\xc0-\xff][\x80-\xbf]{0,2}"  # a UTF-8 sequence begun
)


def _options() -> re2.Options:
    options = re2.Options()
    options.encoding = re2.Options.Encoding.LATIN1  # bytes in, bytes out: a spelling may stop inside a character
    options.max_mem = 32 << 20  # long secrets (JWTs) spelled every way make big programs
    return options


def _any_case(digits: str) -> bytes:
    """A regex for hex digits, each letter in either case."""
    return b"".join(b"[" + c.lower().encode() + c.upper().encode() + b"]" if c.isalpha() else c.encode() for c in digits)


def _hex(value: int, width: int) -> bytes:
    return _any_case(f"{value:0{width}x}")


def _json_escapes(ch: str) -> list[str]:
    """The JSON escapes of one character, as text."""
    cp = ord(ch)
    if cp > 0xFFFF:
        hi, lo = 0xD800 + ((cp - 0x10000) >> 10), 0xDC00 + ((cp - 0x10000) & 0x3FF)
        out = [f"\\u{hi:04x}\\u{lo:04x}"]
    else:
        out = [f"\\u{cp:04x}"]
    if ch in _SHORT:
        out.append("\\" + _SHORT[ch])
    return out


def _spellings(ch: str) -> bytes:
    """A regex for one character of a secret written any way a standard encoder might."""
    raw = ch.encode("utf-8", "surrogatepass")
    cp = ord(ch)
    forms = [re2.escape(raw), b"".join(b"%" + _hex(b, 2) for b in raw), b"&#0*" + str(cp).encode() + b";", b"&#[xX]0*" + _hex(cp, 1) + b";"]
    for escaped in _json_escapes(ch):
        forms.append(_hex_any_case(escaped))
        # the same escape inside a JSON string once more: its backslashes doubled, a '/' or '"' maybe escaped
        forms.append(_hex_any_case(escaped.replace("\\", "\\\\")))
        if escaped[1:] in ("/", '"'):
            forms.append(re2.escape(("\\\\\\" + escaped[1:]).encode()))
    if ch == " ":
        forms.append(rb"\+")
    forms.extend(re2.escape(f"&{name}".encode()) for name in _HTML_NAMES.get(ch, ()))
    return b"(?:" + b"|".join(forms) + b")"


def _hex_any_case(escaped: str) -> bytes:
    """A regex for a JSON escape, the hex digits of each `\\u` in either case."""
    out, i = [], 0
    while i < len(escaped):
        if escaped.startswith("u", i) and i > 0 and escaped[i - 1] == "\\" and i + 5 <= len(escaped):
            out.append(b"u" + _any_case(escaped[i + 1 : i + 5]))
            i += 5
        else:
            out.append(re2.escape(escaped[i].encode()))
            i += 1
    return b"".join(out)


def _prefixes(spelled: list[bytes]) -> bytes:
    """A regex for the spelling of a first part of a secret (one character or more, up to all)."""
    pattern = b""
    for one in reversed(spelled[1:]):
        pattern = b"(?:" + one + pattern + b")?"
    return spelled[0] + pattern


class _Secrets:
    """The RE2 programs for one set of pairs, built once per set (`_compiled`)."""

    __slots__ = ("whole", "tail", "masks", "window")

    def __init__(self, pairs: Pairs):
        texts = [secret.decode("utf-8", "surrogatepass") for secret, _ in pairs]
        spelled = [[_spellings(c) for c in t] for t in texts]
        # one group per secret, longest first (pairs are sorted): a secret containing another goes whole
        self.whole = re2.compile(b"|".join(b"(" + b"".join(s) + b")" for s in spelled), _options())
        # an end of the text that is, or could grow into, a spelling of a secret
        self.tail = re2.compile(b"(?:" + b"|".join(_prefixes(s) for s in spelled) + b")(?:" + _PARTIAL + rb")?\z|(?:" + _PARTIAL + rb")\z", _options())
        self.masks = [mask for _, mask in pairs]
        self.window = 16 * max(len(t) for t in texts) + 16  # bytes a spelled secret and a begun escape can take

    def mask(self, match) -> bytes:
        mask = self.masks[match.lastindex - 1]
        return mask + b"*" * (match.end() - match.start() - len(mask))

    def held_from(self, data: bytes) -> int:
        """Where the end that must wait for more data begins (len(data): nothing waits)."""
        start = max(0, len(data) - self.window)
        m = self.tail.search(data, start)
        return m.start() if m is not None and m.start() < len(data) else len(data)


def _compiled(pairs: Pairs) -> _Secrets:
    """Built once per set of pairs, when a body first needs more than a literal search: kept on
    the pairs (a configuration's credential), and by value for pairs made per request (an
    OAuth token's injection is made anew for each request with the same token)."""
    found = getattr(pairs, "compiled", None)
    if found is None:
        found = _by_value(pairs)
        if isinstance(pairs, Pairs):
            pairs.compiled = found
    return found


@functools.lru_cache(maxsize=64)
def _by_value(pairs: tuple) -> _Secrets:
    return _Secrets(pairs)


def _may_escape(data: bytes) -> bool:
    return b"\\" in data or b"%" in data or b"&" in data or b"+" in data


def scrub_bytes(data: bytes, pairs: Pairs) -> bytes:
    if not pairs or not data:
        return data
    if not _may_escape(data):  # only literal spellings can occur: bytes.replace is the fast path
        for secret, mask in pairs:
            if secret in data:
                data = data.replace(secret, mask)
        return data
    secrets = _compiled(pairs)
    return secrets.whole.sub(secrets.mask, data)


def scrub_text(text: str, pairs: Pairs) -> str:
    data = text.encode("utf-8", "surrogatepass")
    out = scrub_bytes(data, pairs)
    return text if out == data else out.decode("utf-8", "surrogatepass")


def scrub_stream(data: bytes, pairs: Pairs) -> tuple[bytes, bytes]:
    """(what may go out now, scrubbed; what must wait for more data, as it came).
    What waits is an end of `data` that is, or could still grow into, a spelling of a secret,
    and any spelling that reaches into it: a spelling is masked whole or not yet."""
    secrets = _compiled(pairs)
    held = secrets.held_from(data)
    out, at = [], 0
    for m in secrets.whole.finditer(data):
        if m.end() > held or m.end() == len(data):
            held = min(held, m.start())
            break
        out.append(data[at : m.start()])
        out.append(secrets.mask(m))
        at = m.end()
    out.append(data[at:held])
    return b"".join(out), data[held:]


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
        out, self.tail = scrub_stream(self.tail + chunk, self.pairs)
        return out or []
