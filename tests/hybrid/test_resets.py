"""rr_addon.hybrid.resets on a data plane's own counters (its spool's embedded
backend): each reset once, only meter and usage counter prefixes."""

from __future__ import annotations

import asyncio
import time

from rr_addon.core.quota import CounterOp
from rr_addon.counters.embedded import EmbeddedBackend
from rr_addon.hybrid import resets
from rr_addon.hybrid.spool import open_spool
from rr_addon.policy.windows import Window


def op(key: str) -> CounterOp:
    now = int(time.time())
    return CounterOp(key, 1, None, Window("day", now, now + 3600, "d"))


def test_a_reset_applies_once_and_never_beyond_counter_prefixes(tmp_path):
    engine = open_spool(tmp_path)

    async def run():
        backend = EmbeddedBackend(engine)
        await backend.add([op("usage:p:a:d"), op("meter:p:m:a:d"), op("usage:other:a:d")])
        sent = [{"id": 1, "uid": "abc123", "prefixes": ["usage:p:", "meter:p:m:", "", "usage:"]}]  # the last two name too much
        assert await resets.apply(backend, sent) == 1
        left = await backend.read("")
        assert "usage:p:a:d" not in left and "meter:p:m:a:d" not in left
        assert left.get("usage:other:a:d") == 1, "an empty or proxy-less prefix is skipped, not applied"
        assert resets.reportable(left) == {"usage:other:a:d": 1}  # the marker is not reported as usage

        await backend.add([op("usage:p:a:d")])
        assert await resets.apply(backend, sent) == 1  # told again (a restart): not applied again
        assert (await backend.read("usage:p:")) == {"usage:p:a:d": 1}
        await backend.close()

    asyncio.run(run())
    engine.dispose()
