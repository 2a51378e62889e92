"""The addon's few lines of hybrid mode: options, opening the link, starting it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from rr_addon import settings
from rr_addon.hybrid.link import Link, LinkError

__all__ = ["Link", "LinkError", "add_options", "open_link", "spool_of", "start", "wanted"]


def add_options(loader: Any) -> None:
    loader.add_option(
        "rr_dataplane_bundle", str, "",
        "Hybrid data plane: the bundle `rr control-plane issue-dataplane NAME` wrote. rr then needs no database: "
        "it pulls the configuration from the control plane (docs/hybrid.md).",
    )
    loader.add_option("rr_control_plane", str, "", "Hybrid data plane: the control plane's https://HOST:PORT (default: the bundle's).")


def wanted(options: Any) -> bool:
    if options.rr_control_plane and not options.rr_dataplane_bundle:
        raise LinkError("rr_control_plane needs rr_dataplane_bundle (the file `rr control-plane issue-dataplane NAME` wrote)")
    return bool(options.rr_dataplane_bundle)


def open_link(options: Any) -> Link:
    return Link(Path(options.rr_dataplane_bundle).expanduser(), settings.home(), options.rr_control_plane or None)


def spool_of(link: Link | None):
    return link.spool if link is not None else None


def start(link: Link, rr: Any, *, listen: str | None) -> None:
    """Start pulling and reporting; `rr` is the addon (its stats, counters and `install`)."""
    link.listen = listen
    link.stats = rr._stats
    from mitmproxy import ctx

    redis_url = ctx.options.rr_redis_url or os.environ.get("RR_REDIS_URL")
    if redis_url:
        # data planes sharing one Redis count together: they report one scope, not a sum
        link.scope = "redis:" + hashlib.sha256(settings.redacted_url(redis_url).encode()).hexdigest()[:16]

    async def counters() -> dict[str, int]:
        return await rr.metering.backend.read("") if rr.metering is not None else {}

    link.counters = counters
    link.start(rr.install)
