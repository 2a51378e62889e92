"""`--server URL --admin FILE`: `rr status`, `rr audit`, `rr usage`, `rr export`,
`rr apply` and `rr approvals` / `approve` / `deny` against a control plane's admin API, so operators need no
database access (docs/hybrid.md). Output is rendered as the local commands do."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, List, Optional

import typer

from rr_addon.hybrid.remote import Client, RemoteError

SERVER_HELP = "A control plane's https://HOST:PORT: run this there, with --admin FILE or RR_ADMIN=FILE (docs/hybrid.md)."
ADMIN_HELP = "Admin credential for --server (written by `rr control-plane issue-admin NAME`; default: $RR_ADMIN)."


def server_option() -> Any:
    return typer.Option(None, "--server", help=SERVER_HELP)


def admin_option() -> Any:
    return typer.Option(None, "--admin", help=ADMIN_HELP)


def _client(server: str, admin: Optional[Path]) -> Client:
    from rr_addon.cli import die

    try:
        return Client(server, str(admin) if admin else None)
    except RemoteError as e:
        raise die(str(e)) from None


def _call(client: Client, method: str, path: str, **kw: Any) -> Any:
    from rr_addon.cli import die

    try:
        return client.call(method, path, **kw)
    except RemoteError as e:
        raise die(str(e)) from None


# ---------------------------------------------------------------------------
# rr status / audit / usage / export


def status(server: str, admin: Optional[Path], json_out: bool, stale_after: float) -> None:
    from rr_addon.cli import console
    from rr_addon.cli.ops import status_summary, status_table
    from rr_addon.store.dataplanes import DataPlane

    with _client(server, admin) as client:
        doc = _call(client, "GET", "status")
    if json_out:
        print(json.dumps(doc, indent=2))
        return
    planes = [
        DataPlane(
            id=p["id"], hostname=p["hostname"], pid=p["pid"], listen=p["listen"],
            started_at=datetime.fromisoformat(p["started_at"]), heartbeat_at=datetime.fromisoformat(p["heartbeat_at"]),
            config_version=p["config_version"], rr_version=p["rr_version"], stats=p["stats"] or {},
            age=p["heartbeat_age_s"], stale=p["heartbeat_age_s"] > stale_after,
        )
        for p in doc["dataplanes"]
    ]
    if planes:
        console.print(status_table(planes, doc["config_version"]))
    console.print(status_summary(planes, doc["config_version"]))


def audit(server: str, admin: Optional[Path], *, json_out: bool, follow: bool, proxy, code, since, limit: int, interval: float) -> None:
    with _client(server, admin) as client:
        _audit(client, json_out=json_out, follow=follow, proxy=proxy, code=code, since=since, limit=limit, interval=interval)


def _audit(client: Client, *, json_out: bool, follow: bool, proxy, code, since, limit: int, interval: float) -> None:
    from rr_addon.cli import console
    from rr_addon.cli.ops import _stop_on_signals, print_followed, print_latest

    params = {k: v for k, v in (("proxy", proxy), ("code", code), ("since", since)) if v}
    doc = _call(client, "GET", "audit", params={**params, "limit": limit})
    print_latest(console, doc["records"] if limit else [], json_out=json_out, follow=follow)
    if not follow:
        return
    after = doc["last_id"]
    with _stop_on_signals() as stop_requested:
        while not stop_requested():
            page = _call(client, "GET", "audit", params={**params, "after": after, "limit": 1000})
            for r in page["records"]:
                print_followed(console, r, json_out=json_out)
            after = page["last_id"]
            if len(page["records"]) < 1000:
                time.sleep(interval)


class _Window:
    def __init__(self, kind: str, resets_in: int, at: float):
        self.kind, self._resets, self._at = kind, resets_in, at

    def resets_in(self, now: float) -> int:
        return max(0, int(self._resets - (now - self._at)))


class _Row:
    """A usage row as the control plane sent it, shaped for render.usage_table."""

    def __init__(self, d: dict, at: float):
        self.proxy, self.meter, self.subject = d["proxy"], d["meter"], d["subject"]
        self.window = _Window(d["window"], d["resets_in"], at)
        self.currency = d.get("currency")
        if self.currency is None:
            self.used, self.limit, self.remaining = d["used"], d["limit"], d["remaining"]
        else:  # cost meters: the JSON says amounts as decimal strings; the table shows the micro-units
            self.used, self.limit = d["used_micros"], d["limit_micros"]
            self.remaining = None if self.limit is None else max(0, self.limit - self.used)
        self.unmeasured = d["unmeasured"]


def usage(server: str, admin: Optional[Path], proxy, credential, as_json: bool) -> None:
    from rr_addon.cli import console, render

    params = {k: v for k, v in (("proxy", proxy), ("credential", credential)) if v}
    with _client(server, admin) as client:
        rows = _call(client, "GET", "usage", params=params)["rows"]
    if as_json:
        for r in rows:
            print(json.dumps(r))
        return
    now = time.time()
    console.print(render.usage_table([_Row(r, now) for r in rows], now))
    scopes = sorted({s for r in rows for s in r.get("by_scope", {})})
    if scopes:
        console.print(f"includes what {len(scopes)} hybrid data plane(s) or region(s) reported: {', '.join(scopes)} (--json: by_scope)", markup=False, highlight=False, soft_wrap=True)


def usage_reset(server: str, admin: Optional[Path], proxy: str, credential, meter, yes: bool) -> None:
    from rr_addon.cli import console, die

    body = {"proxy": proxy, "credential": credential, "meter": meter}
    with _client(server, admin) as client:
        if not yes:  # the control plane names the counters first (its configuration decides them)
            plan = _call(client, "POST", "usage-reset", json={**body, "dry_run": True})
            if plan.get("error"):
                raise die(plan["error"])
            if not typer.confirm(f"reset counters {', '.join(p + '*' for p in plan['prefixes'])} on {server}?"):
                raise die("nothing reset")
        out = _call(client, "POST", "usage-reset", json=body)
    if out.get("error"):
        raise die(out["error"])
    console.print(f"reset {out['reset']} counters on {server}{out.get('note', '')}")


# ---------------------------------------------------------------------------
# rr token / secret / explain


def _refused(out: dict) -> None:
    from rr_addon.cli import die

    if isinstance(out, dict) and out.get("error"):
        raise die(out["error"])


def token_mint(server: str, admin: Optional[Path], body: dict) -> None:
    with _client(server, admin) as client:
        out = _call(client, "POST", "token-mint", json=body)
    _refused(out)
    print(out["token"])
    for line in out["notes"]:
        print(line, file=sys.stderr)


def token_list(server: str, admin: Optional[Path]) -> list[dict]:
    with _client(server, admin) as client:
        return _call(client, "GET", "tokens")["tokens"]


def token_revoke(server: str, admin: Optional[Path], token_id: str) -> str:
    with _client(server, admin) as client:
        return _call(client, "POST", "token-revoke", json={"id": token_id})["result"]


def secret_status(server: str, admin: Optional[Path]) -> list[dict]:
    with _client(server, admin) as client:
        return _call(client, "GET", "secret-status")["secrets"]


def explain(server: str, admin: Optional[Path], method: str, url: str, headers: list, data, credential, token, claims: dict) -> None:
    """The control plane decides (its configuration, its verifiers); the trace comes back rendered."""
    from rich.text import Text

    from rr_addon.cli import console
    from rr_addon.core.terminal import printable

    body = {"method": method, "url": url, "headers": [list(h) for h in headers], "data": data, "credential": credential, "token": token,
            "claims": claims, "width": console.width}
    with _client(server, admin) as client:
        out = _call(client, "POST", "explain", json=body)
    _refused(out)
    for line in out["notes"]:  # they may quote a token's claims: data, never terminal control
        console.print(Text(printable(str(line))), highlight=False)
    console.print(Text.from_ansi(out["tree"]), end="")
    if out["exit"]:
        raise typer.Exit(out["exit"])


def export(server: str, admin: Optional[Path], output: Optional[Path]) -> None:
    from rr_addon.cli import console

    with _client(server, admin) as client:
        text = _call(client, "GET", "export")["yaml"]
    if output:
        output.write_text(text)
        console.print(f"wrote {output}")
    else:
        sys.stdout.write(text)


# ---------------------------------------------------------------------------
# rr approvals / approve / deny


def approvals(server: str, admin: Optional[Path]) -> list[dict]:
    with _client(server, admin) as client:
        return _call(client, "GET", "approvals")["approvals"]


def approval(server: str, admin: Optional[Path], request_id: str) -> dict | None:
    with _client(server, admin) as client:
        return _call(client, "GET", "approvals", params={"request_id": request_id})["approval"]


def decide(server: str, admin: Optional[Path], request_id: str, state: str, by: Optional[str], note: Optional[str]):
    """(applied, how the request ended) as rr_addon.store.approvals.decide says it."""
    from rr_addon.store.approvals import Closed

    with _client(server, admin) as client:
        out = _call(client, "POST", "approvals/decide", json={"request_id": request_id, "state": state, "by": by, "note": note})
    c = out["closed"]
    closed = None if c is None else Closed(c["state"], c.get("by"), datetime.fromisoformat(c["at"]) if c.get("at") else None, c.get("note"))
    return bool(out["applied"]), closed


# ---------------------------------------------------------------------------
# rr apply


def resolve_here(config, source, env=os.environ) -> tuple[dict, list, list]:
    """The configuration as JSON with every `{env: …}` and `{file: …}` secret replaced
    by its value read on this machine, the label of each (so data planes still
    watch a watched file), and the errors (file:line, as `rr apply` says them)."""
    from rr_addon.apply import source_label
    from rr_addon.config.load import ConfigError, EnvSecret, FileSecret, resolve_secret

    dumped = config.model_dump(mode="json", by_alias=True, exclude_none=True, warnings=False)  # secret refs dump as written
    labels: list = []
    errors: list = []
    for section, objects in (("targets", config.targets), ("proxies", config.proxies)):
        for i, o in enumerate(objects):
            base = source.base_dirs.get((section, o.name), Path.cwd())
            for j, c in enumerate(o.credentials):
                for field in ("secret", "client_secret"):
                    ref = getattr(c, field, None)
                    if not isinstance(ref, (EnvSecret, FileSecret)):
                        continue
                    if section == "proxies" and isinstance(ref, FileSecret) and ref.watch:
                        continue  # refused by the control plane, with its message
                    try:
                        value = resolve_secret(ref, base, env)
                    except ValueError as e:
                        where = source.line_of(section, o.name, ("credentials", j, field))
                        errors.append(ConfigError(source.file_of(section, o.name), f"{section}[{o.name}].credentials[{c.name}].{field}", str(e), where))
                        continue
                    dumped[section][i]["credentials"][j][field] = value
                    labels.append([section, o.name, c.name, source_label(ref, base)])
    return dumped, labels, errors


def apply(server: str, admin: Optional[Path], files: List[Path], *, dry_run: bool, prune: bool, allow_empty: bool) -> None:
    from rr_addon.cli import console, die, err_console, render
    from rr_addon.config import validate
    from rr_addon.config.diff import ABSENT, FieldChange
    from rr_addon.config.load import ConfigError, ConfigErrors, load_files
    from rr_addon.store.config_store import Change

    try:
        config, source = load_files(files)
    except ConfigErrors as e:
        err_console.print(render.errors_text(e.errors), soft_wrap=True)
        raise typer.Exit(1)
    errors = validate.check(config, source)
    dumped, labels, more = resolve_here(config, source)
    if errors or more:
        err_console.print(render.errors_text(errors + more), soft_wrap=True)
        raise typer.Exit(1)
    body = {
        "config": dumped,
        "labels": labels,
        "paths": [str(f) for f in files],
        "source": {
            "files": [[s, n, f] for (s, n), f in source.files.items()],
            "lines": [[s, n, list(rest), line] for (s, n), lines in source.lines.items() for rest, line in lines.items()],
        },
        "dry_run": dry_run,
        "prune": prune,
        "allow_empty": allow_empty,
    }
    with _client(server, admin) as client:
        out = _call(client, "POST", "apply", json=body)
    for message in out.get("broken", []):
        err_console.print(f"rr: {message}", highlight=False, soft_wrap=True, markup=False)
    if out["errors"]:
        err_console.print(render.errors_text([ConfigError(**e) for e in out["errors"]]), soft_wrap=True)
        raise typer.Exit(1)
    if out["warnings"]:
        err_console.print(render.warnings_text([ConfigError(**w) for w in out["warnings"]]), soft_wrap=True)
    changes = [
        Change(c["action"], c["kind"], c["name"], c["detail"], tuple(
            FieldChange(f["path"], ABSENT if f["old_absent"] else f["old"], ABSENT if f["new_absent"] else f["new"], f["note"]) for f in c["fields"]
        ))
        for c in out["changes"]
    ]
    console.print(render.changes_table(changes, "planned changes" if dry_run else "changes"))
    if out["refused"]:
        raise die(out["refused"])
    if dry_run:
        console.print("dry run: nothing written")
    elif out["version"] is None:
        console.print(f"no changes; configuration version stays {out.get('stored_version')}")
    else:
        console.print(f"[green]applied[/green] on {server}: configuration version {out['version']}; data planes pick it up within seconds")
