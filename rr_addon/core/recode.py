"""Scrubbing echoed secrets out of a compressed response while it streams.

An injected secret can reach the caller inside a compressed body only through
decompression, and a compressor may spell it in as many ways as there are
preceding bytes, so scanning the compressed bytes proves nothing. `Recoder`
therefore decodes the body as it arrives (in steps of at most 64 KiB of
output, so a decompression bomb costs time, never memory), passes the decoded
bytes through the same `StreamScrubber` as an identity body, and encodes the
result again with the same content-coding, flushed after every upstream chunk
(an event or a progress line still leaves at once). The caller receives a
body that is compressed and correctly labelled; only its length changes, so
`content-length` is dropped (the caller's connection frames it).

Nothing is capped: no byte is held beyond what the scrubber holds back. A body
that stops decoding (corrupt or truncated) can no longer be scanned: nothing
more is passed on, never the undecodable rest as it came, and `failed` says
why; rr then answers 502 if nothing reached the caller yet, or cuts the
caller's stream so the body never looks complete (see rr_addon.mitm.wire.cut).

Passing the upstream's compressed bytes through unchanged while a parallel
decoder scans them would not be sound: by the time the decoder sees a secret,
the compressed bytes that spell it have already left.
"""

from __future__ import annotations

import zlib
from typing import Callable

import brotli

from rr_addon.policy.bodies import zstd
from rr_addon.policy.scrub import StreamScrubber

_STEP = 1 << 16
RECODABLE = frozenset({"gzip", "x-gzip", "deflate", "br", "zstd"})
IDENTITY = "identity"  # no coding: only a `stage` rewrites the body (event streams, rr_addon.core.event_redaction)


def recodable(content_encoding: str | None) -> str | None:
    """The one content-coding of a header rr can scrub while streaming, or None."""
    codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip().lower() not in ("", "identity")]
    return codings[0] if len(codings) == 1 and codings[0] in RECODABLE else None


class _Zlib:
    """gzip (members may be concatenated) or zlib/raw deflate, decoded in bounded steps."""

    def __init__(self, wbits: int | None):
        self.wbits = wbits  # None: deflate, zlib-wrapped or raw, decided by the first two bytes
        self.d = zlib.decompressobj(wbits) if wbits is not None else None
        self.head = b""
        self.done = False  # the last stream (member) ended

    def feed(self, data: bytes):
        if self.d is None:
            self.head += data
            if len(self.head) < 2:
                return
            b0, b1 = self.head[0], self.head[1]
            self.wbits = 15 if (b0 & 0x0F) == 8 and (b0 << 8 | b1) % 31 == 0 else -15
            self.d, data, self.head = zlib.decompressobj(self.wbits), self.head, b""
        while data:
            if self.done:
                if not data.strip(b"\x00"):
                    return  # padding after the end is tolerated
                if self.wbits != 31:  # only gzip has members
                    raise ValueError("data after the end of the compressed body")
                self.d, self.done = zlib.decompressobj(31), False
            yield self.d.decompress(data, _STEP)
            while self.d.unconsumed_tail:
                yield self.d.decompress(self.d.unconsumed_tail, _STEP)
            if not self.d.eof:
                return
            self.done, data = True, self.d.unused_data

    def finished(self) -> bool:
        return self.done


class _Brotli:
    def __init__(self):
        self.d = brotli.Decompressor()

    def feed(self, data: bytes):
        yield self.d.process(data, output_buffer_limit=_STEP)
        while not self.d.can_accept_more_data() and not self.d.is_finished():
            yield self.d.process(b"", output_buffer_limit=_STEP)

    def finished(self) -> bool:
        return self.d.is_finished()


class _Zstd:
    def __init__(self):
        self.d = zstd.ZstdDecompressor()

    def feed(self, data: bytes):
        if self.d.eof:
            self.d = zstd.ZstdDecompressor()  # frames may be concatenated
        while True:
            yield self.d.decompress(data, _STEP)
            data = b""
            if self.d.eof:
                rest = self.d.unused_data
                if not rest:
                    return
                self.d, data = zstd.ZstdDecompressor(), rest  # frames may be concatenated
            elif self.d.needs_input:
                return

    def finished(self) -> bool:
        return self.d.eof


class _Identity:
    """No content-coding: the body passes as it comes (a stage still rewrites it)."""

    def feed(self, data: bytes):
        yield data

    def finished(self) -> bool:
        return True


def _decoder(coding: str):
    if coding == IDENTITY:
        return _Identity()
    if coding in ("gzip", "x-gzip"):
        return _Zlib(31)
    if coding == "deflate":
        return _Zlib(None)
    if coding == "br":
        return _Brotli()
    return _Zstd()


class _Encoder:
    """The same coding again, at a fast level; `flush` makes what was given decodable at once."""

    def __init__(self, coding: str):
        if coding == IDENTITY:
            self.put, self.flush, self.finish = bytes, bytes, bytes
        elif coding in ("gzip", "x-gzip", "deflate"):
            c = zlib.compressobj(6, zlib.DEFLATED, 31 if coding != "deflate" else 15)
            self.put, self.flush = c.compress, lambda: c.flush(zlib.Z_SYNC_FLUSH)
            self.finish = lambda: c.flush(zlib.Z_FINISH)
        elif coding == "br":
            c = brotli.Compressor(quality=4)
            self.put, self.flush, self.finish = c.process, c.flush, c.finish
        else:
            c = zstd.ZstdCompressor(level=3)
            self.put = lambda data: c.compress(data, zstd.ZstdCompressor.CONTINUE)
            self.flush = lambda: c.flush(zstd.ZstdCompressor.FLUSH_BLOCK)
            self.finish = lambda: c.flush(zstd.ZstdCompressor.FLUSH_FRAME)


class Recoder:
    """A mitmproxy `response.stream` callable for a compressed body: decode, scrub, encode.

    `count` is what the upstream sent (compressed), `sent` what the caller got;
    `tap`, if given, sees the decoded bytes before scrubbing; `on_fail`, if given, is
    called once when the body stops decoding while it still streams (the upstream
    need not be read any further). `stage`, if given, replaces the echo scrubber: a
    callable like `StreamScrubber` (an `EventRedactor`) whose `failed`, once set, stops
    the body as a decoding failure does (what it returned last is still passed on)."""

    __slots__ = ("coding", "scrubber", "decoder", "encoder", "count", "sent", "failed", "tap", "on_fail")

    def __init__(
        self,
        coding: str,
        pairs: tuple[tuple[bytes, bytes], ...],
        tap: Callable[[bytes], None] | None = None,
        on_fail: Callable[[], None] | None = None,
        stage: Callable[[bytes], bytes | list[bytes]] | None = None,
    ):
        self.coding = coding
        self.on_fail = on_fail
        self.scrubber = stage if stage is not None else StreamScrubber(pairs)
        self.decoder = _decoder(coding)
        self.encoder = _Encoder(coding)
        self.count = self.sent = 0
        self.failed: str | None = None
        self.tap = tap

    def __call__(self, chunk: bytes) -> list[bytes]:
        out: list[bytes] = []
        if self.failed is not None:
            return out
        self.count += len(chunk)
        if not chunk:  # the end of the body
            if self.count == 0:
                return out  # no body (e.g. 304): no encoder framing either
            if not self.decoder.finished():
                self.failed = "truncated compressed body"
                return out
            self._put(self.scrubber(b""), out)
            out.append(self.encoder.finish())
        else:
            try:
                for plain in self.decoder.feed(chunk):
                    if plain:
                        if self.tap is not None:
                            self.tap(plain)
                        self._put(self.scrubber(plain), out)
            except (zlib.error, brotli.error, zstd.ZstdError, EOFError, ValueError) as e:
                self.failed = f"corrupt {self.coding} body: {e}"
                if self.on_fail is not None:
                    self.on_fail()
            else:
                out.append(self.encoder.flush())
                failed = getattr(self.scrubber, "failed", None)
                if failed is not None:  # the stage refused the body: its last words go out, nothing after
                    self.failed = failed
                    if self.on_fail is not None:
                        self.on_fail()
        out = [b for b in out if b]
        self.sent += sum(map(len, out))
        return out

    def _put(self, scrubbed: bytes | list[bytes], out: list[bytes]) -> None:
        for piece in [scrubbed] if isinstance(scrubbed, bytes) else scrubbed:
            if piece:
                out.append(self.encoder.put(piece))
