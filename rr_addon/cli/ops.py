"""Operating many data planes: `rr audit …` and `rr status`.

Added to the main app by `rr_addon.cli` (`audit_app`, `status`). The commands need only
the database (no master key): reading the audit trail or the registry never
touches a secret. Rendering is done by the pure functions below.
"""

from __future__ import annotations

import json
import signal
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy.exc import SQLAlchemyError

from rr_addon.core.terminal import printable
from rr_addon.store import audit_store, config_store, dataplanes
from rr_addon.cli import remote
from rr_addon.cli.common import die, open_database
from rr_addon.cli.consoles import Output
from rr_addon.store.db import redacted_url


def _console(stderr: bool = False) -> Console:
    """Made per command, so the terminal width (or COLUMNS) is the one at the time it runs."""
    return Output(stderr=stderr)

RESULT_STYLE = {"allow": "green", "deny": "red", "would-deny": "yellow", "would-hold": "yellow", "error": "bold red"}


# ---------------------------------------------------------------------------
# Pure renderers


def human_age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


# Every field of a record may hold caller bytes (a path, a method) or come from
# an imported file: cells are Text (never parsed as Rich markup) made of
# printable() strings (no terminal control characters).


def _when(rec: dict) -> str:
    return printable((rec.get("ts") or "")[:23].replace("T", " "))


def _caller(rec: dict) -> str:
    if rec.get("proxy") is None:
        return "-"
    return printable(f"{rec['proxy']}/{rec.get('credential') or '-'}")


def _request(rec: dict) -> str:
    host = rec.get("host") or ""
    port = rec.get("port")
    default = {"https": 443, "http": 80}.get(rec.get("scheme") or "")
    where = host if port in (None, default) else f"{host}:{port}"
    call = " ".join(v for v in (rec.get("mcp_method"), rec.get("mcp_tool")) if v)  # a JSON-RPC (MCP) body's
    return printable(f"{rec.get('method') or '-'} {where}{rec.get('path') or ''}" + (f" [{call}]" if call else ""))


def _outcome(rec: dict) -> Text:
    style = RESULT_STYLE.get(rec.get("result") or "", "")
    status = rec.get("status")
    text = Text(printable(status) if status is not None else "-", style=style)
    if rec.get("code"):
        text.append(" " + printable(rec["code"]), style=style)
    elif rec.get("result") not in (None, "allow"):
        text.append(" " + printable(rec["result"]), style=style)
    return text


def _decided_by(rec: dict) -> str:
    text = f"{rec.get('scope') or '-'}/{rec['rule']}" if rec.get("rule") else rec.get("scope") or ""
    approval = rec.get("approval")
    if isinstance(approval, dict) and approval.get("state"):  # a held request: how the hold ended, and who ended it
        text += f" ({approval['state']}" + (f" by {approval['by']}" if approval.get("by") else "") + ")"
    return printable(text)


def _ms(value) -> str:
    if value is None:
        return ""
    return f"{value:.1f}" if isinstance(value, (int, float)) else printable(value)


def audit_table(records: Iterable[dict], title: str = "audit trail (UTC)") -> Table:
    table = Table(title=title, title_justify="left")
    for name, kw in (
        ("time", {"no_wrap": True}),
        ("status", {}),
        ("caller", {}),
        ("target", {}),
        ("request", {"overflow": "fold"}),
        ("ms", {"justify": "right"}),
        ("bytes out", {"justify": "right"}),
        ("decided by", {}),
        ("request id", {"no_wrap": True}),
    ):
        table.add_column(name, **kw)
    for r in records:
        table.add_row(
            Text(_when(r)),
            _outcome(r),
            Text(_caller(r)),
            Text(printable(r.get("target") or "-")),
            Text(_request(r)),
            Text(_ms(r.get("latency_ms"))),
            Text("" if r.get("bytes_out") is None else printable(r["bytes_out"])),
            Text(_decided_by(r)),
            Text(printable(r.get("request_id") or "")),
        )
    return table


def audit_line(rec: dict) -> Text:
    """One record on one line (for --follow)."""
    line = Text(_when(rec) + " ", style="dim")
    line.append_text(_outcome(rec))
    line.append(f"  {_caller(rec)} -> {rec.get('target') or '-'}  {_request(rec)}")
    if rec.get("latency_ms") is not None:
        line.append(f"  {_ms(rec['latency_ms'])}ms", style="dim")
    if _decided_by(rec):
        line.append(f"  [{_decided_by(rec)}]", style="cyan")
    line.append(f"  {printable(rec.get('request_id') or '')}", style="dim")
    return line


def json_line(rec: dict) -> str:
    return json.dumps(rec, separators=(",", ":"), default=str)


def print_latest(console: Console, shown: list[dict], *, json_out: bool, follow: bool) -> None:
    """`rr audit`'s latest records (local or --server): JSON lines or a table;
    with none, a line saying so, unless --follow goes on to wait for some."""
    if json_out:
        for r in shown:
            print(json_line(r))
    elif shown or not follow:
        console.print(audit_table(shown) if shown else Text("no audit records match", style="dim"))


def print_followed(console: Console, rec: dict, *, json_out: bool) -> None:
    """One record `rr audit --follow` found, flushed at once (the output may be a pipe)."""
    if json_out:
        print(json_line(rec), flush=True)
    else:
        console.print(audit_line(rec), soft_wrap=True)
        sys.stdout.flush()


def status_table(planes: list[dataplanes.DataPlane], current_version: int | None, now: datetime | None = None) -> Table:
    now = now or datetime.now(timezone.utc)
    version = "?" if current_version is None else str(current_version)
    table = Table(title=f"data planes (configuration version {version})", title_justify="left")
    for name, kw in (
        ("data plane", {"no_wrap": True}),
        ("listen", {}),
        ("config version", {"justify": "right"}),
        ("last heartbeat", {"justify": "right"}),
        ("up", {"justify": "right"}),
        ("requests", {"justify": "right"}),
        ("audit dropped", {"justify": "right"}),
        ("rr", {}),
    ):
        table.add_column(name, **kw)
    for p in planes:
        if p.config_version is None:
            v = Text("-", style="yellow")
        elif current_version is not None and p.config_version < current_version:
            v = Text(f"{p.config_version} (behind)", style="yellow")
        else:
            v = Text(str(p.config_version), style="green")
        hybrid = p.stats.get("hybrid") if isinstance(p.stats.get("hybrid"), dict) else {}
        if hybrid.get("stale"):  # a hybrid data plane that could not confirm its configuration
            v.append(f" (stale since {printable(hybrid.get('stale_since') or '?')})", style="bold red")
        beat = Text(f"stale: {human_age(p.age)} ago", style="bold red") if p.stale else Text(f"{human_age(p.age)} ago")
        dropped = p.stats.get("audit_dropped")
        table.add_row(
            Text(printable(p.id)),
            Text(printable(p.listen or "-")),
            v,
            beat,
            human_age((now - p.started_at).total_seconds()),
            str(p.stats.get("requests", "")),
            Text(str(dropped), style="red" if dropped else "") if dropped is not None else "",
            Text(printable(p.rr_version or "")),
        )
    return table


def status_summary(planes: list[dataplanes.DataPlane], current_version: int | None) -> Text:
    live = [p for p in planes if not p.stale]
    behind = [p for p in live if current_version is not None and (p.config_version or 0) < current_version]
    text = Text(f"{len(live)} running", style="green" if live else "yellow")
    stale = len(planes) - len(live)
    if stale:
        text.append(f", {stale} stale (no heartbeat; crashed or cut off)", style="red")
    if behind:
        text.append(f", {len(behind)} not yet on version {current_version}", style="yellow")
    if not planes:
        text = Text("no data plane has registered (is `rr run` running against this database?)", style="yellow")
    return text


# ---------------------------------------------------------------------------
# Commands


audit_app = typer.Typer(
    name="audit",
    help="The audit trail: one record per request, from every data plane.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@audit_app.callback(invoke_without_command=True)
def audit(
    ctx: typer.Context,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new records as they are stored (Ctrl-C stops)."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object per line (the JSON-lines sink's format, plus `id`)."),
    proxy: Optional[str] = typer.Option(None, "--proxy", help="Only this proxy's requests."),
    code: Optional[str] = typer.Option(
        None, "--code", help="An rr code (access-denied, quota-exceeded…), an HTTP status (403) or a result (allow, deny, would-deny, error)."
    ),
    since: Optional[str] = typer.Option(None, "--since", help="A duration back from now (15m, 2h, 7d) or an ISO time (UTC unless stated)."),
    limit: int = typer.Option(50, "--limit", "-n", min=0, help="Show at most this many of the latest records (before following)."),
    interval: float = typer.Option(0.5, "--interval", min=0.05, help="Seconds between checks with --follow."),
    server: Optional[str] = remote.server_option(),
    admin: Optional[Path] = remote.admin_option(),
) -> None:
    """Show the latest audit records, oldest first; --follow tails new ones."""
    if ctx.invoked_subcommand is not None:
        return
    if server:
        if since:
            try:
                audit_store.parse_since(since)
            except ValueError as e:
                raise die(f"--since: {e}") from None
        return remote.audit(server, admin, json_out=json_out, follow=follow, proxy=proxy, code=code, since=since, limit=limit, interval=interval)
    try:
        flt = audit_store.Filter(proxy=proxy, code=code, since=audit_store.parse_since(since) if since else None)
    except ValueError as e:
        raise die(f"--since: {e}") from None
    console = _console()
    engine = open_database()
    upto = audit_store.last_id(engine)
    shown = [r for r in audit_store.query(engine, flt, limit=limit) if r["id"] <= upto] if limit else []
    print_latest(console, shown, json_out=json_out, follow=follow)
    if not follow:
        return
    try:
        with _stop_on_signals() as stop_requested:
            for r in audit_store.follow(engine, flt, after=upto, interval=interval, stop=stop_requested):
                print_followed(console, r, json_out=json_out)
    except SQLAlchemyError as e:
        raise die(f"lost the database while following: {str(getattr(e, 'orig', None) or e).strip().splitlines()[0]}") from None


@contextmanager
def _stop_on_signals() -> Iterator[Callable[[], bool]]:
    """A check that turns true on Ctrl-C or SIGTERM, for loops that should finish their step and stop.

    A KeyboardInterrupt can land inside a finalizer or a weakref callback (the
    database pool has both), where Python prints it as "ignored" and goes on:
    `--follow` then never ended. A flag the loop checks cannot be lost (and the
    handler takes no lock, so it cannot deadlock the thread it interrupts)."""
    signalled: list[int] = []
    previous = {s: signal.signal(s, lambda signum, _frame: signalled.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: bool(signalled)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@audit_app.command("prune")
def audit_prune(
    older_than: str = typer.Option("90d", "--older-than", help="Delete records older than this (90d, 12h, 2w…)."),
) -> None:
    """Delete audit records older than the retention period (default 90 days)."""
    try:
        age = audit_store.parse_duration(older_than)
    except ValueError as e:
        raise die(f"--older-than: {e}") from None
    cutoff = datetime.now(timezone.utc) - age
    engine = open_database()
    n = audit_store.prune(engine, age)
    _console().print(f"pruned {n} audit record{'s' if n != 1 else ''} older than {older_than} (before {cutoff.isoformat(timespec='seconds')})")


@audit_app.command("import")
def audit_import(
    files: List[Path] = typer.Argument(..., exists=True, dir_okay=False, help="JSON-lines files: spill files or rr_audit_file files."),
) -> None:
    """Load audit records from JSON-lines files; records already stored are skipped."""
    console = _console()
    engine = open_database()
    for file in files:
        try:
            read, stored = audit_store.import_jsonl(engine, file)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise die(f"{file}: not an audit JSON-lines file ({e})") from None
        console.print(f"{file}: {read} records read, {stored} stored, {read - stored} already there")


def status(
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    stale_after: float = typer.Option(dataplanes.STALE_AFTER, "--stale-after", help="Seconds without a heartbeat before a data plane is marked stale."),
    server: Optional[str] = remote.server_option(),
    admin: Optional[Path] = remote.admin_option(),
) -> None:
    """List running data planes: where they listen, the configuration version each enforces, their last heartbeat.
    In a hybrid data plane's home: that data plane's own state (current or stale, and since when)."""
    from rr_addon.hybrid import status as hybrid_status

    if server:
        return remote.status(server, admin, json_out, stale_after)
    if (state := hybrid_status.here()) is not None:
        return hybrid_status.show(state, json_out, _console())
    engine = open_database()
    try:
        current = config_store.current_version(engine)
    except LookupError:
        current = None
    planes = dataplanes.list_planes(engine, stale_after=stale_after)
    database = redacted_url(str(engine.url))
    if json_out:
        print(json.dumps({"config_version": current, "database": database, "dataplanes": [p.as_json() for p in planes]}, indent=2))
        return
    console = _console()
    if planes:
        console.print(status_table(planes, current))
    console.print(status_summary(planes, current))
