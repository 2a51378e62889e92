"""Scrubbing injected secrets out of what an upstream sends back (docs/security.md).

An upstream that echoes a request (debug endpoints, error pages) would hand
the caller the secret rr injected. `StreamScrubber` replaces every secret while
the body streams, holding back only the end of a chunk that could be the start
of a secret (at most len(longest secret) - 1 bytes), so a secret split across
chunks is still caught, nothing else is buffered, and a chunk that ends an
event or a line (which no secret starts with) passes at once.

A held tail waits for the next chunk or the end of the body; it is never
released on a timer. Releasing it would hand the caller the start of the
secret — all but its last byte, if an upstream (or a caller steering an echo
endpoint) pauses there — and the guarantee is that no part of it leaves.
Streams of events and lines never pay for this; a byte stream pays only when
a chunk happens to end with the first bytes of a secret.

The replacement has the secret's length — the placeholder padded with '*'
(`[rr:api/live]*****`), or only '*' for secrets shorter than the placeholder —
so a streamed body keeps the Content-Length the upstream announced.
"""

from __future__ import annotations

from typing import Callable, Iterable


def mask(secret: bytes, placeholder: bytes) -> bytes:
    n = len(secret)
    return (placeholder + b"*" * n)[:n] if n >= len(placeholder) else b"*" * n


def replacement_pairs(secrets: Iterable[str], placeholder: str) -> tuple[tuple[bytes, bytes], ...]:
    ph = placeholder.encode()
    pairs = {s.encode(): mask(s.encode(), ph) for s in secrets if s}
    # longest first, so a secret that contains another is replaced whole
    return tuple(sorted(pairs.items(), key=lambda kv: len(kv[0]), reverse=True))


def scrub_bytes(data: bytes, pairs: tuple[tuple[bytes, bytes], ...]) -> bytes:
    for secret, ph in pairs:
        if secret in data:
            data = data.replace(secret, ph)
    return data


def scrub_text(text: str, pairs: tuple[tuple[bytes, bytes], ...]) -> str:
    for secret, ph in pairs:
        s = secret.decode()
        if s in text:
            text = text.replace(s, ph.decode())
    return text


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
        """The length of the longest end of `data` that is the start of a secret."""
        best = 0
        for secret, _ in self.pairs:
            for k in range(min(len(secret) - 1, len(data)), best, -1):
                if data.endswith(secret[:k]):
                    best = k
                    break
        return best
