"""`rr token …`: mint short-lived narrowed tokens (rr_addon.core.tokens)."""

from __future__ import annotations

import secrets
import sys
import time
from typing import List, Optional

import typer

from rr_addon.cli.common import console, die, open_store, read_stored

from rr_addon.core import tokens
from rr_addon.store import minted
from rr_addon.store.audit_store import parse_duration

token_app = typer.Typer(help="Short-lived tokens that narrow a proxy credential.", no_args_is_help=True)

MAX_TTL = 30 * 86400  # a minted token is a short-lived credential: a month at most


@token_app.command("mint")
def mint(
    proxy: str = typer.Option(..., "--proxy", help="Proxy of the parent credential."),
    credential: str = typer.Option(..., "--credential", help="The parent proxy credential."),
    ttl: str = typer.Option(..., "--ttl", help="Lifetime: 45s, 30m, 1h, 7d (at most 30d)."),
    target: List[str] = typer.Option([], "--target", help="Restrict to this target of the proxy (repeatable)."),
    allow: List[str] = typer.Option([], "--allow", help='Restrict to "METHOD PATH" (repeatable); PATH may end with * (prefix).'),
    max_requests: Optional[int] = typer.Option(None, "--max-requests", help="Not supported yet: refused rather than ignored."),
    note: str = typer.Option("", "--note", help="Free text for your records (not embedded in the token)."),
) -> None:
    """Print a new token, alone, on standard output. Used like an rr key; it can
    only narrow its parent credential, and stops working when it expires."""
    if max_requests is not None:
        raise die("--max-requests is not supported yet (no per-token counter); mint without it")
    try:
        seconds = parse_duration(ttl).total_seconds()
    except ValueError as e:
        raise die(f"--ttl: {e}") from None
    if not 1 <= seconds <= MAX_TTL:
        raise die(f"--ttl {ttl}: must be between 1s and 30d")
    try:
        allowed = tuple(tokens.parse_allow(a) for a in allow)
    except ValueError as e:
        raise die(str(e)) from None
    if len(allowed) > tokens.MAX_ALLOW:
        raise die(f"at most {tokens.MAX_ALLOW} --allow entries")
    engine, keyring = open_store()
    stored = read_stored(engine, keyring)
    found = {p.name: p for p in stored.config.proxies}.get(proxy)
    if found is None:
        raise die(f"no proxy {proxy!r}")
    parent = {c.name: c for c in found.credentials}.get(credential)
    if parent is None:
        raise die(f"proxy {proxy} has no credential {credential!r}")
    if parent.auth in ("jwt_verify", "oauth2"):
        raise die(f"{proxy}/{credential} verifies tokens itself ({parent.auth}): a minted child would skip that verification")
    bound = {t.target for t in found.targets}
    for t in target:
        if t not in bound:
            raise die(f"--target {t}: not a target of proxy {proxy} ({', '.join(sorted(bound)) or 'none'})")
    token = tokens.Token(
        id="tok_" + secrets.token_hex(8),
        proxy=proxy,
        credential=credential,
        expires_at=int(time.time() + seconds),
        targets=tuple(dict.fromkeys(target)),
        allow=allowed,
    )
    minted.record(engine, token, note)  # for list and revoke; the token itself is not stored
    print(tokens.encode(token, stored.hmac_key))
    print(f"minted {token.id} for {proxy}/{credential}, expires {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(token.expires_at))}"
          + (f" ({note})" if note else ""), file=sys.stderr)


@token_app.command("list")
def list_tokens(as_json: bool = typer.Option(False, "--json", help="One JSON array of objects (id, proxy, credential, state, …).")) -> None:
    """Minted tokens (never the tokens themselves): parent, narrowing, expiry, state."""
    import json

    from rich.table import Table

    engine, _ = open_store()
    rows = minted.listing(engine)
    if as_json:
        print(json.dumps(rows))
        return
    table = Table()
    # the id is what `rr token revoke` takes: never shortened, however narrow the terminal
    table.add_column("id", no_wrap=True, min_width=max((len(r["id"]) for r in rows), default=2))
    for name in ("parent", "targets", "allow", "expires (UTC)", "state", "note"):
        table.add_column(name, overflow="fold")
    for r in rows:
        table.add_row(r["id"], f"{r['proxy']}/{r['credential']}", ", ".join(r["targets"]) or "all", ", ".join(r["allow"]) or "all",
                      r["expires_at"], r["state"], r["note"])
    console.print(table)


@token_app.command("revoke")
def revoke(token_id: str = typer.Argument(..., metavar="ID", help="The id `rr token list` shows (tok_…).")) -> None:
    """Revoke a minted token: every data plane refuses it within its reload interval."""
    engine, _ = open_store()
    result = minted.revoke(engine, token_id)
    if result == "unknown":
        raise die(f"no minted token {token_id!r} (see rr token list)")
    console.print(f"{token_id}: {result}")
