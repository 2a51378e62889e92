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


approvals_app = typer.Typer(
    name="approvals",
    help="Requests held by `approve` rules: list them; `show ID`, `approve ID`, `deny ID` (also `rr approve` / `rr deny`).",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def register(app: typer.Typer) -> None:
    app.add_typer(approvals_app, name="approvals")
    app.command("approve")(approve)
    app.command("deny")(deny)
    approvals_app.command("approve")(approve)
    approvals_app.command("deny")(deny)


@approvals_app.callback(invoke_without_command=True)
def list_pending(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="One JSON array of objects (request_id, proxy, credential, method, url, rule, …)."),
    server: Optional[str] = remote.server_option(),
    admin: Optional[Path] = remote.admin_option(),
) -> None:
    """Requests held for approval, oldest first: caller, request, rule, age and a masked body preview."""
    from rr_addon.cli.common import open_store

    if ctx.invoked_subcommand is not None:
        return
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


@approvals_app.command("show")
def show_one(
    request_id: str = typer.Argument(..., metavar="ID", help="The request id `rr approvals` shows (the answer's rr-request-id)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object: the fields of `rr approvals --json` and state, decided_by, decided_at, note."),
    server: Optional[str] = remote.server_option(),
    admin: Optional[Path] = remote.admin_option(),
) -> None:
    """One held request, pending or not: what was held, and who decided it, when and why."""
    from rr_addon.cli.common import console, die, open_store

    if server:
        row = remote.approval(server, admin, request_id)
    else:
        engine, _ = open_store()
        row = store.one(engine, request_id)
    if row is None:
        raise die(f"no held request {request_id!r} (see rr approvals)")
    if as_json:
        print(json.dumps(row))
        return
    table = Table(show_header=False, box=None, title=f"held request {row['request_id']}", title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    decided = row["state"] if not row["decided_by"] else f"{row['state']} by {row['decided_by']}"
    for name, value in (
        ("state", decided + (f" at {row['decided_at']}" if row["decided_at"] else "")),
        ("note", row["note"] or "-"),
        ("caller", f"{row['proxy']}/{row['credential']}"),
        ("request", f"{row['method']} {row['url']}"),
        ("target", f"{row['target'] or '-'}" + (f"/{row['target_credential']}" if row["target_credential"] else "")),
        ("rule", f"{row['scope']}/{row['rule']}"),
        ("data plane", row["dataplane"]),
        ("held at", row["created_at"]),
        ("expires at", row["expires_at"]),
        ("body preview", row["body_preview"] or "-"),
    ):
        table.add_row(name, Text(printable(str(value))))
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
