"""Scrubbing injected secrets out of what an upstream sends back (CONTRACT §9).

An upstream that echoes a request (debug endpoints, error pages) would hand
the caller the secret rr injected. `StreamScrubber` replaces every secret while
the body streams, holding back only the last len(longest secret) - 1 bytes of
each chunk, so a secret split across chunks is still caught and nothing else
is buffered.

The replacement has the secret's length — the placeholder padded with '*'
(`[rr:api/live]*****`), or only '*' for secrets shorter than the placeholder —
so a streamed body keeps the Content-Length the upstream announced.
"""

from __future__ import annotations

from typing import Iterable


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
    """A mitmproxy `response.stream` callable: scrubs and counts bytes."""

    __slots__ = ("pairs", "keep", "tail", "count")

    def __init__(self, pairs: tuple[tuple[bytes, bytes], ...]):
        self.pairs = pairs
        self.keep = max((len(s) for s, _ in pairs), default=1) - 1
        self.tail = b""
        self.count = 0

    def __call__(self, chunk: bytes) -> bytes:
        self.count += len(chunk)
        if not self.pairs:
            return chunk
        if not chunk:  # end of the body: what is held back can no longer complete a secret
            out, self.tail = scrub_bytes(self.tail, self.pairs), b""
            return out
        data = scrub_bytes(self.tail + chunk, self.pairs)
        if self.keep == 0:
            return data
        self.tail = data[-self.keep :]
        return data[: -self.keep]
