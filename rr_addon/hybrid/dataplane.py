"""The few lines through which a data plane's services (rr_addon/services.py)
use hybrid mode: whether it is asked for, opening the link, starting it."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import Any, Callable

from rr_addon import metrics, settings
from rr_addon.hybrid import resets
from rr_addon.hybrid.link import Link, LinkError
from rr_addon.store.db import redacted_url

__all__ = ["Link", "LinkError", "open_link", "refresh_tokens", "requested", "spool_of", "start"]

logger = logging.getLogger("rr")


def requested(bundle: str, control_plane: str) -> bool:
    """Whether the options (rr_dataplane_bundle, rr_control_plane) ask for a hybrid data plane."""
    if control_plane and not bundle:
        raise LinkError("rr_control_plane needs rr_dataplane_bundle (the file `rr control-plane issue-dataplane NAME` wrote)")
    return bool(bundle)


def open_link(bundle: str, control_plane: str, plane_id: str) -> Link:
    return Link(Path(bundle).expanduser(), settings.home(), control_plane or None, plane_id=plane_id)


def spool_of(link: Link | None):
    return link.spool if link is not None else None


def refresh_tokens(link: Link):
    """Where this data plane keeps rotated OAuth refresh tokens: its spool, encrypted (rr_addon.hybrid.grants)."""
    from rr_addon.hybrid.grants import SpoolRefreshTokens

    return SpoolRefreshTokens(link.spool, link.bundle.seal_key)


def start(link: Link, services: Any, *, listen: str | None, stats: Callable[[], dict], install: Callable[[Any], None]) -> None:
    """Start pulling and reporting. A received configuration is compiled and
    installed like a reload (`install` is the addon's: identities, then the snapshot)."""
    reloader = services.reloader
    link.listen, link.stats = listen, stats
    if redis_url := services.redis_url:
        # data planes sharing one Redis count together: they report one scope, not a sum
        link.scope = "redis:" + hashlib.sha256(redacted_url(redis_url).encode()).hexdigest()[:16]

    async def counters() -> dict[str, int]:
        metering = services.gate.metering
        return resets.reportable(await metering.backend.read("")) if metering is not None else {}

    async def apply_resets(pending: list[dict]) -> int | None:
        metering = services.gate.metering
        if metering is None:
            return None  # not counting yet: the next heartbeat asks again
        return await resets.apply(metering.backend, pending)

    async def received(stored: Any) -> None:
        async with reloader.swap_lock:
            snap = await asyncio.to_thread(reloader.compile, stored, reloader.keyring)
            install(snap)
        logger.info("rr now enforces configuration version %d", snap.version)
        metrics.config_reload(True, snap.version)

    link.counters = counters
    link.apply_resets = apply_resets
    link.start(received)
