"""The one interface every counter backend offers.

A backend knows nothing of meters or windows: it keeps integer counters by
key, each dead after `op.window.end`, and applies a list of ops atomically.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from rr_addon.core.quota import CheckResult, CounterOp

__all__ = ["BackendUnavailable", "CheckResult", "CounterBackend", "CounterOp", "SyncCounterBackend"]


class BackendUnavailable(Exception):
    """The counters cannot be reached. The glue applies each meter's
    `on_backend_error` (see `Plan.on_backend_error`); the backend retries by itself."""


@runtime_checkable
class CounterBackend(Protocol):
    async def check_and_add(self, ops: Sequence[CounterOp]) -> CheckResult:
        """All or nothing: if any op with a limit refuses, nothing is added."""
        ...

    async def add(self, ops: Sequence[CounterOp]) -> None:
        """Add unconditionally (a response value after the response)."""
        ...

    async def read(self, prefix: str) -> dict[str, int]:
        """Live counters whose key starts with `prefix` (for `rr usage`)."""
        ...

    async def reset(self, prefix: str) -> int:
        """Delete the counters whose key starts with `prefix`; how many were deleted."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class SyncCounterBackend(CounterBackend, Protocol):
    """A backend that can answer without awaiting: the request path calls these
    directly and saves a coroutine per request."""

    def check_and_add_now(self, ops: Sequence[CounterOp]) -> CheckResult: ...

    def add_now(self, ops: Sequence[CounterOp]) -> None: ...
