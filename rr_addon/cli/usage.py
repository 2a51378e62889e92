"""`rr usage`: every meter and usage counter per window; `rr usage reset` for operators."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Optional

import typer

from rr_addon.cli import remote, render
from rr_addon.cli.common import console, die, load_snapshot, open_store
from rr_addon.cli.consoles import Output  # noqa: F401
from rr_addon.hybrid import resets
from rr_addon.reports import counter_backend, read_counters, report, row_json, row_key

usage_app = typer.Typer(help="Meter and usage counters (used, limit, remaining, resets in).", no_args_is_help=False)


@usage_app.callback(invoke_without_command=True)
def usage(
    ctx: typer.Context,
    proxy: Optional[str] = typer.Option(None, "--proxy", help="Only this proxy."),
    credential: Optional[str] = typer.Option(None, "--credential", help="Only this proxy credential."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per counter."),
    server: Optional[str] = remote.server_option(),
    admin: Optional[Path] = remote.admin_option(),
) -> None:
    """Every meter and usage counter of the current windows."""
    if ctx.invoked_subcommand is not None:
        return
    if server:
        return remote.usage(server, admin, proxy, credential, as_json)
    engine, keyring = open_store()
    snap = load_snapshot(engine, keyring)
    now = time.time()
    counts = asyncio.run(read_counters(counter_backend(engine)))
    rows, scopes = report(engine, snap, counts, now, proxy, credential)
    if as_json:
        for r in rows:
            print(json.dumps({**row_json(r, now), "by_scope": scopes.get(row_key(r), {})}))
        return
    console = Output()  # made now: the terminal width (or COLUMNS) of this run
    console.print(render.usage_table(rows, now))
    if scopes:
        names = sorted({s for by in scopes.values() for s in by})
        console.print(f"includes what {len(names)} hybrid data plane(s) or region(s) reported: {', '.join(names)} (--json: by_scope)", markup=False, highlight=False, soft_wrap=True)


@usage_app.command("reset")
def reset(
    proxy: str = typer.Option(..., "--proxy", help="The proxy whose counters to reset."),
    credential: Optional[str] = typer.Option(None, "--credential", help="Only this credential's counters."),
    meter: Optional[str] = typer.Option(None, "--meter", help="Only this meter (otherwise every meter and the usage counters)."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
    server: Optional[str] = remote.server_option(),
    admin: Optional[Path] = remote.admin_option(),
) -> None:
    """Reset counters (all windows). Running proxies see it within a second;
    hybrid data planes at their next heartbeat (within 5 s)."""
    if server:
        return remote.usage_reset(server, admin, proxy, credential, meter, yes)
    engine, keyring = open_store()
    snap = load_snapshot(engine, keyring)
    try:
        prefixes = resets.prefixes(snap, proxy, credential, meter)
    except ValueError as e:
        raise die(str(e)) from None
    if not yes and not typer.confirm(f"reset counters {', '.join(p + '*' for p in prefixes)}?"):
        raise die("nothing reset")
    total, _ = asyncio.run(resets.reset_here(counter_backend(engine), engine, prefixes))
    console.print(f"reset {total} counters" + resets.hybrid_note(engine))
