"""The few lines through which a data plane's services use hybrid mode:
options, opening the link, starting it."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Callable

from rr_addon import metrics, settings
from rr_addon.hybrid.link import Link, LinkError

__all__ = ["Link", "LinkError", "add_options", "open_link", "requested", "spool_of", "start"]

logger = logging.getLogger("rr")


def add_options(loader: Any) -> None:
    loader.add_option(
        "rr_dataplane_bundle", str, "",
        "Hybrid data plane: the bundle `rr control-plane issue-dataplane NAME` wrote. rr then needs no database: "
        "it pulls the configuration from the control plane (docs/hybrid.md).",
    )
    loader.add_option("rr_control_plane", str, "", "Hybrid data plane: the control plane's https://HOST:PORT (default: the bundle's).")


def requested() -> Any | None:
    """mitmproxy's options when they ask for a hybrid data plane, else None."""
    from mitmproxy import ctx

    options = ctx.options
    if options.rr_control_plane and not options.rr_dataplane_bundle:
        raise LinkError("rr_control_plane needs rr_dataplane_bundle (the file `rr control-plane issue-dataplane NAME` wrote)")
    return options if options.rr_dataplane_bundle else None


def open_link(options: Any, plane_id: str) -> Link:
    return Link(Path(options.rr_dataplane_bundle).expanduser(), settings.home(), options.rr_control_plane or None, plane_id=plane_id)


def spool_of(link: Link | None):
    return link.spool if link is not None else None


def start(link: Link, services: Any, *, listen: str | None, stats: Callable[[], dict], install: Callable[[Any], None]) -> None:
    """Start pulling and reporting. A received configuration is compiled and
    installed like a reload (`install` is the addon's: identities, then the snapshot)."""
    from mitmproxy import ctx

    reloader = services.reloader
    link.listen, link.stats = listen, stats
    redis_url = ctx.options.rr_redis_url or os.environ.get("RR_REDIS_URL")
    if redis_url:
        # data planes sharing one Redis count together: they report one scope, not a sum
        link.scope = "redis:" + hashlib.sha256(settings.redacted_url(redis_url).encode()).hexdigest()[:16]

    async def counters() -> dict[str, int]:
        metering = services.gate.metering
        return await metering.backend.read("") if metering is not None else {}

    async def received(stored: Any) -> None:
        async with reloader.swap_lock:
            snap = await asyncio.to_thread(reloader.compile, stored, reloader.keyring)
            install(snap)
        logger.info("rr now enforces configuration version %d", snap.version)
        metrics.config_reload(True, snap.version)

    link.counters = counters
    link.start(received)
