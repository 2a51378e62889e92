"""rr_addon.timeouts.Watch on a real event loop, with short timeouts."""

import asyncio

from rr_addon import timeouts
from rr_addon.testing.wait import eventually_async


def run(coro):
    return asyncio.run(coro)


def test_first_byte_expires_once_and_answered_switches_to_idle():
    async def main():
        expired: list[str] = []
        w = timeouts.Watch(0.1, 0, lambda: 0, expired.append)
        w.sent()
        await eventually_async(lambda: expired, timeout=5)
        assert expired == [timeouts.FIRST_BYTE] and w.handle is None  # and no timer left to fire again
        expired.clear()
        w = timeouts.Watch(0.2, 0, lambda: 0, expired.append)
        w.sent()
        w.answered()  # idle 0: no limit once the response started
        assert w.handle is None
        await asyncio.sleep(0.3)  # past the first-byte timeout it no longer has
        assert expired == []

    run(main())


def test_idle_is_cut_only_once_progress_stops():
    async def main():
        expired: list[str] = []
        moved = [0]
        w = timeouts.Watch(0, 0.4, lambda: moved[0], expired.append)
        w.answered()
        for _ in range(16):  # 0.8 s of progress, twice the idle timeout
            moved[0] += 1
            await asyncio.sleep(0.05)
        assert expired == []
        await eventually_async(lambda: expired, timeout=5)  # progress stopped
        assert expired == [timeouts.IDLE]

    run(main())


def test_cancel_stops_every_timer():
    async def main():
        expired: list[str] = []
        w = timeouts.Watch(0.05, 0.05, lambda: 0, expired.append)
        w.sent()
        w.cancel()
        assert w.handle is None
        await asyncio.sleep(0.15)  # three times both timeouts
        assert expired == []

    run(main())


def test_a_phase_switch_keeps_a_look_that_is_due_sooner():
    """sent()/answered() re-arm only when the pending look would come too late: one
    timer per exchange in the common case, and each phase's limit still holds."""

    async def main():
        expired = asyncio.Event()
        which: list[str] = []

        def expire(phase: str) -> None:
            which.append(phase)
            expired.set()

        w = timeouts.Watch(0.3, 0.2, lambda: 0, expire)  # idle looks every 0.05 s
        first = w.handle
        w.sent()  # first byte due in 0.3 s: the look due in 0.05 s stays
        assert w.handle is first
        await asyncio.wait_for(expired.wait(), 5)
        assert which == [timeouts.FIRST_BYTE]
        w.cancel()

        w = timeouts.Watch(5.0, 60.0, lambda: 0, expire)
        w.sent()  # first byte in 5 s: sooner than the idle look in 15 s, so re-armed
        assert w.handle is not None and w.handle.when() <= asyncio.get_running_loop().time() + 5.0
        kept = w.handle
        w.answered()  # the idle look would be in 15 s: the one due in 5 s stays
        assert w.handle is kept
        w.cancel()
        assert w.handle is None

    run(main())
