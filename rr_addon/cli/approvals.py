"""`rr approvals`, `rr approve ID`, `rr deny ID`: decide requests held by `approve` rules
(docs/approvals.md) from any machine that reaches the configuration database, or
through a control plane's admin API (`--server URL --admin FILE`, docs/hybrid.md)."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from rr_addon.cli import remote
from rr_addon.core.terminal import printable
from rr_addon.store import approvals as store

MAX_NOTE = 500  # characters: a note is a reason, not a document


def register(app: typer.Typer) -> None:
    app.command("approvals")(list_pending)
    app.command("approve")(approve)
    app.command("deny")(deny)


def list_pending(
    as_json: bool = typer.Option(False, "--json", help="One JSON array of objects (request_id, proxy, credential, method, url, rule, …)."),
    server: Optional[str] = remote.server_option(),
    admin: Optional[Path] = remote.admin_option(),
) -> None:
    """Requests held for approval, oldest first: caller, request, rule, age and a masked body preview."""
    from rr_addon.cli.common import open_store

    if server:
        rows = remote.approvals(server, admin)
    else:
        engine, _ = open_store()
        rows = store.listing(engine)
    show(rows, as_json)


def show(rows: list[dict], as_json: bool) -> None:
    from rr_addon.cli.common import console

    if as_json:
        print(json.dumps(rows))
        return
    if not rows:
        console.print("no request is waiting for approval")
        return
    table = Table(title="held for approval (decide with rr approve ID / rr deny ID)", title_justify="left")
    table.add_column("request id", no_wrap=True, min_width=max(len(r["request_id"]) for r in rows))
    for name, kw in (("caller", {}), ("request", {"overflow": "fold"}), ("rule", {}), ("age", {"justify": "right"}),
                     ("expires in", {"justify": "right"}), ("body preview", {"overflow": "fold"})):
        table.add_column(name, **kw)
    for r in rows:
        table.add_row(
            Text(r["request_id"]),
            Text(printable(f"{r['proxy']}/{r['credential']}")),
            Text(printable(f"{r['method']} {r['url']}")),
            Text(printable(f"{r['scope']}/{r['rule']}")),
            f"{r['age_seconds']} s",
            f"{r['expires_in_seconds']} s",
            Text(printable(r["body_preview"]) or "-"),
        )
    console.print(table)


def _decide(request_id: str, state: str, by: Optional[str], note: Optional[str], server: Optional[str], admin: Optional[Path]) -> None:
    from rr_addon.cli.common import open_store, console, die

    who = by if by is not None else (None if server else _user())  # --server: the admin credential's name by default
    if who is not None and (not who.strip() or len(who) > 100):
        raise die("--by: give a name of 1 to 100 characters")
    if note is not None and len(note) > MAX_NOTE:
        raise die(f"--note: at most {MAX_NOTE} characters")
    if server:
        applied, closed = remote.decide(server, admin, request_id, state, who, note)
        who = closed.by if applied and closed is not None else who
    else:
        engine, _ = open_store()
        applied, closed = store.decide(engine, request_id, state, who, note)
    if closed is None:
        raise die(f"no held request {request_id!r} (see rr approvals)")
    if not applied:
        by_whom = f" by {closed.by}" if closed.by else ""
        raise die(f"request {request_id} is no longer waiting: it was {closed.state}{by_whom}")
    console.print(Text(printable(f"{request_id}: {state} by {who}" + (f" ({note})" if note else ""))))


def approve(
    request_id: str = typer.Argument(..., metavar="ID", help="The request id `rr approvals` shows."),
    by: Optional[str] = typer.Option(None, "--by", help="Who decides (recorded in the audit trail; default: your user name; with --server, the admin credential's name, and NAME is recorded as `NAME (admin ADMIN)`)."),
    note: Optional[str] = typer.Option(None, "--note", help="Why (recorded in the audit trail)."),
    server: Optional[str] = remote.server_option(),
    admin: Optional[Path] = remote.admin_option(),
) -> None:
    """Approve a held request: the data plane holding it forwards it within a second."""
    _decide(request_id, store.APPROVED, by, note, server, admin)


def deny(
    request_id: str = typer.Argument(..., metavar="ID", help="The request id `rr approvals` shows."),
    by: Optional[str] = typer.Option(None, "--by", help="Who decides (recorded in the audit trail; default: your user name; with --server, the admin credential's name, and NAME is recorded as `NAME (admin ADMIN)`)."),
    note: Optional[str] = typer.Option(None, "--note", help="Why (recorded in the audit trail)."),
    server: Optional[str] = remote.server_option(),
    admin: Optional[Path] = remote.admin_option(),
) -> None:
    """Deny a held request: the caller gets 403 access-denied."""
    _decide(request_id, store.DENIED, by, note, server, admin)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"
