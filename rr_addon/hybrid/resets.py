"""`rr usage reset`: which counters a reset names, resetting them where the
command runs, and carrying the reset to hybrid data planes.

On the control plane a reset is also recorded (registry.record_reset); each
data plane's heartbeat answer lists the resets it has not yet seen, and the
data plane applies each one once per counting scope: it first claims the reset
with a marker counter (`hybrid-reset:<uid>:`, limit 1; the uid is random, as
reset ids repeat across control-plane databases) in its own counter
backend, so data planes sharing one Redis apply it once between them, and a
restarted data plane (its counters in its spool, or in Redis) does not apply
it again. A marker lives as long as the control plane keeps resets
(registry.RESET_HORIZON) and a little longer."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from rr_addon.core.quota import CounterOp, meter_key, unmeasured_key, usage_key
from rr_addon.policy.windows import Window

logger = logging.getLogger("rr")

MARKER = "hybrid-reset:"
COUNTERS = re.compile(r"(usage|meter|unmeasured):[^:]+:(.*:)?")  # one proxy's counters at least (rr_addon.core.quota's keys)  # never reported as usage, never a meter's key (those start usage:/meter:/unmeasured:)


def prefixes(snap: Any, proxy: str, credential: str | None, meter: str | None) -> list[str]:
    """The counter key prefixes a reset of (proxy, credential, meter) deletes; ValueError says what is unknown."""
    p = snap.proxies.get(proxy)
    if p is None:
        raise ValueError(f"no proxy {proxy!r}")
    meters = [m for m in p.meters.meters if not meter or m.name == meter]
    if meter and not meters:
        raise ValueError(f"proxy {proxy!r} has no meter {meter!r}")
    if credential and credential not in p.callers:
        raise ValueError(f"proxy {proxy!r} has no credential {credential!r}")
    # keys end in ':<window key>', so a prefix ending in ':' matches exactly one subject
    out = []
    if not meter:
        out.append(usage_key(proxy, credential, "") if credential else f"usage:{proxy}:")
    for m in meters:
        if credential and m.per == "proxy":
            continue  # a proxy-wide meter has no per-credential counter
        out.append(meter_key(proxy, m.name, credential, "") if credential else f"meter:{proxy}:{m.name}:")
        if m.valued:
            out.append(unmeasured_key(proxy, m.name, credential, "") if credential else f"unmeasured:{proxy}:{m.name}:")
    return out


async def reset_here(backend: Any, engine: Any, keys: list[str]) -> tuple[int, int]:
    """Reset `keys` prefixes in this database's (or Redis's) counters and record the
    reset for hybrid data planes: (counters deleted here, the reset's id)."""
    from rr_addon.hybrid import registry

    total = 0
    try:
        for prefix in keys:
            total += await backend.reset(prefix)
    finally:
        await backend.close()
    return total, registry.record_reset(engine, keys)


def hybrid_note(engine: Any) -> str:
    """What the operator is told about hybrid data planes after a reset on the control plane."""
    from rr_addon.hybrid import registry

    n = sum(1 for p in registry.listing(engine) if p["revoked_at"] is None)
    return f"; {n} hybrid data plane(s) apply it at their next heartbeat (within 5 s)" if n else ""


def _marker(uid: str, now: float) -> CounterOp:
    from rr_addon.hybrid.registry import RESET_HORIZON

    end = int(now) + RESET_HORIZON + 86400
    return CounterOp(f"{MARKER}{uid}:", 1, 1, Window("hybrid-reset", int(now), end, uid))


async def apply(backend: Any, resets: list[dict]) -> int | None:
    """Apply the resets a control plane sent (oldest first), each once per counter
    backend; the id of the last one handled (applied, or applied before), None if none."""
    last = None
    for r in resets:
        rid, uid, keys = int(r["id"]), str(r["uid"]), [str(k) for k in r["prefixes"]]
        if not uid.isalnum():
            raise ValueError(f"usage reset {rid}: a bad uid {uid[:40]!r}")
        claimed = await backend.check_and_add([_marker(uid, time.time())])
        if claimed.admitted:
            deleted = 0
            try:
                for prefix in keys:
                    if COUNTERS.fullmatch(prefix):  # a proxy's, a meter's or a subject's counters; never everything
                        deleted += await backend.reset(prefix)
                    else:
                        logger.warning("rr: usage reset %d names %r, not a meter or usage counter prefix: skipped", rid, prefix[:80])
            except Exception:
                await backend.reset(f"{MARKER}{uid}:")  # not applied: the next heartbeat tries again
                raise
            logger.info("rr: applied the control plane's usage reset %d (%s): %d counters", rid, ", ".join(k + "*" for k in keys), deleted)
        last = rid
    return last


def reportable(counts: dict[str, int]) -> dict[str, int]:
    """Counters to report as usage: not the reset markers."""
    return {k: v for k, v in counts.items() if not k.startswith(MARKER)}
