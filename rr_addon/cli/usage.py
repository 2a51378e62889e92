"""`rr usage`: every meter and usage counter per window; `rr usage reset` for operators."""

from __future__ import annotations

import asyncio
import json
import os
import time
from decimal import Decimal
from typing import Optional

import typer

from rr_addon.cli import render
from rr_addon.cli.common import console, die, load_snapshot, open_store
from rr_addon.cli.consoles import Output  # noqa: F401
from rr_addon.policy.costs import MICRO
from rr_addon.core.meters import PROXY_WIDE, UsageRow, meter_key, unmeasured_key, usage_key

usage_app = typer.Typer(help="Meter and usage counters (used, limit, remaining, resets in).", no_args_is_help=False)


def _backend(engine):
    """The backend the proxies count in: Redis with RR_REDIS_URL, else the embedded database."""
    redis_url = os.environ.get("RR_REDIS_URL")
    if redis_url:
        from rr_addon.meters.redis_backend import RedisBackend

        return RedisBackend(redis_url)
    from rr_addon.meters.embedded import EmbeddedBackend

    return EmbeddedBackend(engine)


async def _read(backend, prefix: str = "") -> dict[str, int]:
    try:
        return await backend.read(prefix)
    finally:
        await backend.close()


def usage_rows(snap, counts, now, proxy=None, credential=None) -> list[UsageRow]:
    rows: list[UsageRow] = []
    for p in snap.proxies.values():
        if proxy and p.name != proxy:
            continue
        creds = [c for c in p.callers if not credential or c == credential]
        rows += [r for r in p.meters.usage_rows(creds, counts, now) if not credential or r.subject in (credential, PROXY_WIDE)]
    return rows


def row_json(r: UsageRow, now: float) -> dict:
    row = {
        "proxy": r.proxy,
        "meter": r.meter,
        "subject": r.subject,
        "window": r.window.kind,
        "window_key": r.window.key,
        "used": r.used,
        "limit": r.limit,
        "remaining": r.remaining,
        "resets_in": r.window.resets_in(now),
        "unmeasured": r.unmeasured,  # response_value meters: responses whose value could not be read
    }
    if r.currency is not None:
        # cost meters: exact decimal strings in the currency, and the counters' integer micro-units
        row.update(
            used=amount(r.used),
            limit=amount(r.limit),
            remaining=amount(r.remaining),
            currency=r.currency,
            used_micros=r.used,
            limit_micros=r.limit,
        )
    return row


def amount(micros: int | None) -> str | None:
    """Micro-units as an exact decimal string of the currency: 12.5 -> "12.500000"."""
    return None if micros is None else str((Decimal(micros) / MICRO).quantize(Decimal("0.000001")))


@usage_app.callback(invoke_without_command=True)
def usage(
    ctx: typer.Context,
    proxy: Optional[str] = typer.Option(None, "--proxy", help="Only this proxy."),
    credential: Optional[str] = typer.Option(None, "--credential", help="Only this proxy credential."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per counter."),
) -> None:
    """Every meter and usage counter of the current windows."""
    if ctx.invoked_subcommand is not None:
        return
    engine, keyring = open_store()
    snap = load_snapshot(engine, keyring)
    now = time.time()
    counts = asyncio.run(_read(_backend(engine)))
    rows = usage_rows(snap, counts, now, proxy, credential)
    if as_json:
        for r in rows:
            print(json.dumps(row_json(r, now)))
        return
    Output().print(render.usage_table(rows, now))  # made now: the terminal width (or COLUMNS) of this run


@usage_app.command("reset")
def reset(
    proxy: str = typer.Option(..., "--proxy", help="The proxy whose counters to reset."),
    credential: Optional[str] = typer.Option(None, "--credential", help="Only this credential's counters."),
    meter: Optional[str] = typer.Option(None, "--meter", help="Only this meter (otherwise every meter and the usage counters)."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
) -> None:
    """Reset counters (all windows). Running proxies see it within a second."""
    engine, keyring = open_store()
    snap = load_snapshot(engine, keyring)
    p = snap.proxies.get(proxy)
    if p is None:
        raise die(f"no proxy {proxy!r}")
    meters = [m for m in p.meters.meters if not meter or m.name == meter]
    if meter and not meters:
        raise die(f"proxy {proxy!r} has no meter {meter!r}")
    if credential and credential not in p.callers:
        raise die(f"proxy {proxy!r} has no credential {credential!r}")
    # keys end in ':<window key>', so a prefix ending in ':' matches exactly one subject
    prefixes = []
    if not meter:
        prefixes.append(usage_key(proxy, credential, "") if credential else f"usage:{proxy}:")
    for m in meters:
        if credential and m.per == "proxy":
            continue  # a proxy-wide meter has no per-credential counter
        prefixes.append(meter_key(proxy, m.name, credential, "") if credential else f"meter:{proxy}:{m.name}:")
        if m.valued:
            prefixes.append(unmeasured_key(proxy, m.name, credential, "") if credential else f"unmeasured:{proxy}:{m.name}:")
    if not yes and not typer.confirm(f"reset counters {', '.join(p + '*' for p in prefixes)}?"):
        raise die("nothing reset")

    async def run() -> int:
        backend = _backend(engine)
        try:
            total = 0
            for prefix in prefixes:
                total += await backend.reset(prefix)
            return total
        finally:
            await backend.close()

    console.print(f"reset {asyncio.run(run())} counters")
