"""Timeouts a proxy should have: connect, time to first byte, idle.

None of them is a deadline on the whole exchange: a response that keeps
making progress — a long event stream, a slow 200 MB download, a large
clone — is never cut. What is cut, and when:

- connect (`rr_connect_timeout`): the upstream's TCP connection and TLS
  handshake are not complete this long after rr started to open them;
- first byte (`rr_first_byte_timeout`): the request is sent (its body is in)
  and no response headers came back for this long;
- idle (`rr_idle_timeout`): while the request body streams to the upstream or
  the response streams back, no byte moved for this long.

Progress is read from the byte counts of the flow's stream callables
(ByteCounter, StreamScrubber, BodyCollector all count what passes), sampled
every quarter of the idle timeout: nothing runs per chunk, and an idle
exchange is cut between 1 and 1.25 times the timeout after its last byte.
A phase switch keeps a pending look that is due no later than the new
phase's first one (it re-arms from there): one timer per exchange in the
common case instead of three.
A WebSocket (or any exchange) whose response hook has run is no longer
watched; mitmproxy's own `tcp_timeout` still closes idle connections.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

CONNECT = "connect"
FIRST_BYTE = "first byte"
IDLE = "idle"


class Watch:
    """The timeouts of one exchange. `expire(which)` is called at most once."""

    __slots__ = ("first_byte", "idle", "progress", "expire", "phase", "since", "seen", "handle")

    def __init__(self, first_byte: float, idle: float, progress: Callable[[], int], expire: Callable[[str], None]):
        self.first_byte, self.idle = first_byte, idle
        self.progress, self.expire = progress, expire
        self.phase = IDLE  # while the request body streams (if it does) the idle timeout applies
        self.since = time.monotonic()
        self.seen = progress()
        self.handle: asyncio.TimerHandle | None = None
        self._arm()

    def sent(self) -> None:
        """The request is complete: the upstream has `first_byte` seconds to answer."""
        self._switch(FIRST_BYTE)

    def answered(self) -> None:
        """Response headers arrived: from now on only idleness is cut."""
        self._switch(IDLE)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def _switch(self, phase: str) -> None:
        self.phase, self.since, self.seen = phase, time.monotonic(), self.progress()
        step = self._step()
        handle = self.handle
        if step is not None and handle is not None and handle.when() <= asyncio.get_running_loop().time() + step:
            return  # a look is due no later than the new phase's first: `_check` re-arms from there
        self.cancel()
        self._arm()

    def _limit(self) -> float:
        return self.first_byte if self.phase == FIRST_BYTE else self.idle

    def _step(self) -> float | None:
        """Seconds to the next look in this phase (None: no limit applies)."""
        limit = self._limit()
        if limit <= 0:
            return None
        return max(self.since + limit - time.monotonic(), 0.01) if self.phase == FIRST_BYTE else max(limit / 4, 0.05)

    def _arm(self) -> None:
        step = self._step()
        if step is not None:
            self.handle = asyncio.get_running_loop().call_later(step, self._check)

    def _check(self) -> None:
        self.handle = None
        now = time.monotonic()
        if self.phase == IDLE:
            seen = self.progress()
            if seen != self.seen:  # bytes moved since the last look
                self.seen, self.since = seen, now
        if now - self.since >= self._limit() - 1e-3:
            self.expire(self.phase)
            return
        self._arm()
