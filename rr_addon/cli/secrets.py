"""`rr secret status`: where each target credential's secret comes from, when it
last rotated and whether it is readable — never a value.

Needs only the database (no master key). Secrets `rr apply` resolved are
reported as stored; watched files (`{file: PATH, watch: true}`) and commands
(`{command: [..]}`) are reported by every live data plane through its heartbeat (rr_addon.rotation.SecretWatcher.status),
because only the data plane can tell whether it reads the file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional
from datetime import datetime, timezone

import typer
from rich.table import Table
from rich.text import Text
from sqlmodel import select

from rr_addon.cli import remote
from rr_addon.cli.common import open_database
from rr_addon.cli.ops import _console, human_age
from rr_addon.core.terminal import printable
from rr_addon.rotation import EXEC, display, read_by_data_plane
from rr_addon.store import dataplanes
from rr_addon.store.db import session
from rr_addon.store.tables import TargetCredentialRow, TargetRow

secret_app = typer.Typer(name="secret", help="Upstream secrets of target credentials (never their values).", no_args_is_help=True, add_completion=False)


def collect(engine) -> list[dict]:
    """One entry per (target credential, reporting data plane); stored secrets have one entry."""
    with session(engine) as s:
        rows = s.exec(select(TargetRow.name, TargetCredentialRow).join(TargetCredentialRow, TargetCredentialRow.target_id == TargetRow.id)).all()
        creds = sorted(
            ((t, c.name, c.kind, c.secret_source, c.secret_enc is not None, c.updated_at) for t, c in rows), key=lambda r: (r[0], r[1])
        )
    planes = [p for p in dataplanes.list_planes(engine) if not p.stale]
    out = []
    for target, name, kind, source, stored, updated in creds:
        base = {"target": target, "credential": name, "kind": kind}
        if source is None and not stored:
            out.append({**base, "source": "none", "readable": None, "rotated_at": None, "dataplane": None, "error": None})
            continue
        if source and source.startswith(EXEC):
            source = display(source)  # the command, as the data planes run it
        elif not read_by_data_plane(source):
            at = updated.replace(tzinfo=updated.tzinfo or timezone.utc).timestamp()
            out.append({**base, "source": source or "stored", "readable": stored, "rotated_at": at, "dataplane": None, "error": None})
            continue
        reports = [(p, p.stats.get("secrets", {}).get(f"{target}/{name}")) for p in planes]
        reports = [(p, r) for p, r in reports if r is not None]
        if not reports:
            out.append({**base, "source": source, "readable": None, "rotated_at": None, "dataplane": None, "error": "no running data plane reports it"})
        for p, r in reports:
            out.append({**base, "source": source, **_reported(r), "dataplane": p.id})
    return out


def _reported(r) -> dict:
    """What a data plane's heartbeat says of one secret, in the shapes the table expects:
    one data plane's odd report must not break the command for everybody."""
    if not isinstance(r, dict):
        return {"readable": None, "rotated_at": None, "error": "unreadable report"}
    readable, rotated, error = r.get("readable"), r.get("rotated_at"), r.get("error")
    return {
        "readable": readable if isinstance(readable, bool) else None,
        "rotated_at": float(rotated) if isinstance(rotated, (int, float)) and not isinstance(rotated, bool) else None,
        "error": str(error)[:500] if error is not None else None,
    }


def table(entries: list[dict], now: float) -> Table:
    t = Table(title="target credential secrets", title_justify="left")
    for col in ("target credential", "kind", "source", "data plane", "readable", "last rotation", "error"):
        t.add_column(col)
    for e in entries:
        readable = {True: Text("yes", style="green"), False: Text("NO (using the last good value)", style="bold red"), None: Text("-")}[e["readable"]]
        if e["rotated_at"] is not None:
            rotated = f"{human_age(now - e['rotated_at'])} ago"
        else:
            rotated = "not since start" if e["dataplane"] else "-"
        t.add_row(
            Text(printable(f"{e['target']}/{e['credential']}")),
            Text(printable(e["kind"])),
            Text(printable(e["source"])),
            Text(printable(e["dataplane"] or "-")),
            readable,
            rotated,
            Text(printable(e["error"] or ""), style="red" if e["error"] else ""),
        )
    return t


@secret_app.command("status")
def status(
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    server: Optional[str] = remote.server_option(),
    admin: Optional[Path] = remote.admin_option(),
) -> None:
    """Each target credential's secret source, last rotation and whether it is readable (watched files: per data plane)."""
    entries = remote.secret_status(server, admin) if server else collect(open_database())
    if json_out:
        for e in entries:
            if e["rotated_at"] is not None:
                e["rotated_at"] = datetime.fromtimestamp(e["rotated_at"], timezone.utc).isoformat(timespec="seconds")
        print(json.dumps({"secrets": entries}, indent=2))
        return
    console = _console()
    console.print(table(entries, time.time()) if entries else Text("no target credentials", style="dim"))
