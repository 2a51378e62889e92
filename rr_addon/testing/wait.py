"""Wait for a condition, never for a length of time: the one polling helper of the tests.

The timeout only says when to give up, and is generous (a loaded 2-core CI machine);
nothing here measures speed (measurements belong in scripts/bench*)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

GENEROUS = 30.0  # seconds before a condition that should hold at once is declared never met


def _describe(what: str | Callable[[], str]) -> str:
    return what() if callable(what) else what


def _pauses(first: float) -> Iterator[float]:
    """Short pauses at first (most conditions hold almost at once), then longer ones, up to
    0.2 s: a check that runs the CLI or reads a database does not load the machine the proxy
    under test shares."""
    pause = first
    while True:
        yield pause
        pause = min(pause * 2, max(first, 0.2))


def eventually(check: Callable[[], T], timeout: float = GENEROUS, what: str | Callable[[], str] = "condition", interval: float = 0.01) -> T:
    """Call `check()` until it returns something truthy, and return that. TimeoutError
    naming `what` (a string, or a callable giving one, e.g. a log tail) if it never does."""
    deadline = time.monotonic() + timeout
    pauses = _pauses(interval)
    while not (value := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{_describe(what)} not reached after {timeout}s")
        time.sleep(next(pauses))
    return value


async def eventually_async(check: Callable[[], T], timeout: float = GENEROUS, what: str | Callable[[], str] = "condition", interval: float = 0.01) -> T:
    """`eventually` inside an event loop: the loop keeps running while we wait."""
    deadline = asyncio.get_running_loop().time() + timeout
    pauses = _pauses(interval)
    while not (value := check()):
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{_describe(what)} not reached after {timeout}s")
        await asyncio.sleep(next(pauses))
    return value
