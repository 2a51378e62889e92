"""`rr token …`: mint short-lived narrowed tokens (rr_addon.core.tokens)."""

from __future__ import annotations

import secrets
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.text import Text

from rr_addon.cli import remote
from rr_addon.cli.common import console, die, open_store

from rr_addon.core import tokens
from rr_addon.core.terminal import printable
from rr_addon.store import config_store, minted
from rr_addon.store.audit_store import parse_duration

token_app = typer.Typer(help="Short-lived tokens that narrow a proxy credential.", no_args_is_help=True)

MAX_TTL = 30 * 86400  # a minted token is a short-lived credential: a month at most
MAX_TOKEN_LENGTH = 4096  # fits Proxy-Authorization (Basic base64 adds a third) under rr's 8 KiB credential limit


def _read_jwt(path: str) -> str:
    """The caller's token from a file or standard input (never the command line: argv is public)."""
    from rr_addon.cli import die

    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read(65536)
    except (OSError, UnicodeDecodeError) as e:
        raise die(f"--jwt-file {path}: {e.strerror if isinstance(e, OSError) else 'not UTF-8 text'}") from None
    text = text.strip()
    if text[:7].lower() == "bearer ":
        text = text[7:].strip()
    if not text or any(c.isspace() for c in text):
        raise die(f"--jwt-file {path}: expected one token")
    return text


class MintRefused(ValueError):
    """What `rr token mint` (here, or on the control plane for --server) refuses, and why."""


def _verify_caller(stored, keyring, proxy: str, credential: str, token: str, ca_file: str):
    """The caller's token verified by the very verifiers a data plane builds
    (rr_addon.identity.service), and accepted by this parent — or MintRefused with why."""
    import asyncio

    from rr_addon.identity.service import Identities
    from rr_addon.identity import Refused
    from rr_addon.store import config_store

    identities = Identities(ca_file or None)
    identities.rebuild(config_store.snapshot_of(stored, keyring))

    async def verify():
        try:
            return await identities.identify(token)
        finally:
            await identities.close()

    result = asyncio.run(verify())
    if isinstance(result, Refused):
        raise MintRefused(f"--jwt-file: the token does not verify: {result.reason}" + (f" ({result.detail})" if result.detail else ""))
    caller, verified = result
    if (caller.proxy, caller.name) != (proxy, credential):
        raise MintRefused(f"--jwt-file: the token is accepted by {caller.proxy}/{caller.name}, not by {proxy}/{credential}")
    return verified


@token_app.command("mint")
def mint(
    proxy: str = typer.Option(..., "--proxy", help="Proxy of the parent credential."),
    credential: str = typer.Option(..., "--credential", help="The parent proxy credential."),
    ttl: str = typer.Option(..., "--ttl", help="Lifetime: 45s, 30m, 1h, 7d (at most 30d)."),
    target: List[str] = typer.Option([], "--target", help="Restrict to this target of the proxy (repeatable)."),
    allow: List[str] = typer.Option([], "--allow", help='Restrict to "METHOD PATH" (repeatable); PATH may end with * (a prefix of whole segments: /v1* is /v1 and /v1/…).'),
    max_requests: Optional[int] = typer.Option(
        None, "--max-requests", help="At most N admitted requests over the token's life (then 429 quota-exceeded, scope token)."
    ),
    note: str = typer.Option("", "--note", help="Free text for your records (not embedded in the token)."),
    jwt_file: Optional[str] = typer.Option(
        None, "--jwt-file", help="A jwt_verify/oauth2 parent: the caller's token (file, or - for stdin), verified now; the child carries its claims."
    ),
    idp_ca_file: str = typer.Option("", "--idp-ca-file", envvar="RR_IDP_CA_FILE", help="CA bundle (PEM) for the identity provider (--jwt-file)."),
    server: Optional[str] = remote.server_option(),
    admin: Optional[Path] = remote.admin_option(),
) -> None:
    """Print a new token, alone, on standard output. Used like an rr key; it can
    only narrow its parent credential, and stops working when it expires.

    The parent of a child for a verified caller (an agent launched by a user)
    is a jwt_verify or oauth2 credential, and --jwt-file gives that user's
    token: rr verifies it as the data planes would, the child carries its
    verified claims (the parent's claims rules apply to them at every use) and
    expires no later than it."""
    if server:
        if idp_ca_file:
            print("note: with --server the control plane verifies --jwt-file with its own RR_IDP_CA_FILE; --idp-ca-file is not used", file=sys.stderr)
        return remote.token_mint(server, admin, dict(
            proxy=proxy, credential=credential, ttl=ttl, target=list(target), allow=list(allow), max_requests=max_requests, note=note,
            jwt=_read_jwt(jwt_file) if jwt_file is not None else None,
        ))
    engine, keyring = open_store()
    try:
        encoded, token, notes = mint_token(engine, keyring, proxy, credential, ttl, list(target), list(allow), max_requests, note,
                                           _read_jwt(jwt_file) if jwt_file is not None else None, idp_ca_file)
    except MintRefused as e:
        raise die(str(e)) from None
    print(encoded)
    for line in notes:
        print(line, file=sys.stderr)


def mint_token(engine, keyring, proxy: str, credential: str, ttl: str, target: list[str], allow: list[str], max_requests: int | None,
               note: str, jwt: str | None, idp_ca_file: str = "") -> tuple[str, tokens.Token, list[str]]:
    """Check, mint and record a token: (the token, what it is, lines for the operator). MintRefused says why not."""
    if max_requests is not None and not 1 <= max_requests <= tokens.MAX_REQUESTS:
        raise MintRefused(f"--max-requests {max_requests}: must be between 1 and {tokens.MAX_REQUESTS}")
    try:
        seconds = parse_duration(ttl).total_seconds()
    except ValueError as e:
        raise MintRefused(f"--ttl: {e}") from None
    if not 1 <= seconds <= MAX_TTL:
        raise MintRefused(f"--ttl {ttl}: must be between 1s and 30d")
    try:
        allowed = tuple(tokens.parse_allow(a) for a in allow)
    except ValueError as e:
        raise MintRefused(str(e)) from None
    if len(allowed) > tokens.MAX_ALLOW:
        raise MintRefused(f"at most {tokens.MAX_ALLOW} --allow entries")
    try:
        stored = config_store.read(engine, keyring)
    except config_store.StoredConfigError as e:
        raise MintRefused(f"the stored configuration does not load: {e}") from None
    found = {p.name: p for p in stored.config.proxies}.get(proxy)
    if found is None:
        raise MintRefused(f"no proxy {proxy!r}")
    parent = {c.name: c for c in found.credentials}.get(credential)
    if parent is None:
        raise MintRefused(f"proxy {proxy} has no credential {credential!r}")
    claims, expires_at = None, int(time.time() + seconds)
    if parent.verifies:
        if jwt is None:
            raise MintRefused(f"{proxy}/{credential} verifies tokens ({parent.auth}): give the caller's token with --jwt-file (the child carries its verified claims)")
        verified = _verify_caller(stored, keyring, proxy, credential, jwt, idp_ca_file)
        if verified.expires_at is None:
            raise MintRefused("--jwt-file: the token has no exp; a child would outlive it")
        claims, expires_at = dict(verified.claims), min(expires_at, int(verified.expires_at))
        if expires_at <= time.time():
            raise MintRefused("--jwt-file: the token has expired")
    elif jwt is not None:
        raise MintRefused(f"--jwt-file: {proxy}/{credential} is a static key ({parent.auth}); only jwt_verify and oauth2 parents verify a caller's token")
    bound = {t.target for t in found.targets}
    for t in target:
        if t not in bound:
            raise MintRefused(f"--target {t}: not a target of proxy {proxy} ({', '.join(sorted(bound)) or 'none'})")
    token = tokens.Token(
        id="tok_" + secrets.token_hex(8),
        proxy=proxy,
        credential=credential,
        expires_at=expires_at,
        targets=tuple(dict.fromkeys(target)),
        allow=allowed,
        generation=stored.caller_generations.get((proxy, credential), ""),
        max_requests=max_requests,
        claims=claims,
    )
    encoded = tokens.encode(token, stored.hmac_key)
    if len(encoded) > MAX_TOKEN_LENGTH:
        raise MintRefused(f"the token would be {len(encoded)} characters (at most {MAX_TOKEN_LENGTH}, for proxy headers): the caller's claims are too large")
    minted.record(engine, token, note)  # for list and revoke; the token itself is not stored
    notes = [f"note: {a.segment_note}" for a in allowed if a.segment_note]
    notes.append(f"minted {token.id} for {proxy}/{credential}" + (f" (subject {token.subject})" if token.subject else "")
                 + f", expires {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(token.expires_at))}" + (f" ({note})" if note else ""))
    return encoded, token, notes


@token_app.command("list")
def list_tokens(
    as_json: bool = typer.Option(False, "--json", help="One JSON array of objects (id, proxy, credential, state, …)."),
    server: Optional[str] = remote.server_option(),
    admin: Optional[Path] = remote.admin_option(),
) -> None:
    """Minted tokens (never the tokens themselves): parent, narrowing, expiry, state."""
    import json

    from rich.table import Table

    if server:
        rows = remote.token_list(server, admin)
    else:
        engine, _ = open_store()
        rows = minted.listing(engine)
    if as_json:
        print(json.dumps(rows))
        return
    table = Table()
    # the id is what `rr token revoke` takes: never shortened, however narrow the terminal
    table.add_column("id", no_wrap=True, min_width=max((len(r["id"]) for r in rows), default=2))
    for name in ("parent", "subject", "targets", "allow", "max requests", "expires (UTC)", "state", "note"):
        table.add_column(name, overflow="fold")
    for r in rows:
        cells = (r["id"], f"{r['proxy']}/{r['credential']}", r["subject"] or "-", ", ".join(r["targets"]) or "all", ", ".join(r["allow"]) or "all",
                 str(r["max_requests"]) if r["max_requests"] is not None else "-", r["expires_at"], r["state"], r["note"] or "")
        table.add_row(*(Text(printable(str(c))) for c in cells))  # notes and subjects are data: no markup, no escapes
    console.print(table)


@token_app.command("revoke")
def revoke(
    token_id: str = typer.Argument(..., metavar="ID", help="The id `rr token list` shows (tok_…)."),
    server: Optional[str] = remote.server_option(),
    admin: Optional[Path] = remote.admin_option(),
) -> None:
    """Revoke a minted token: every data plane refuses it within its reload interval."""
    if server:
        result = remote.token_revoke(server, admin, token_id)
    else:
        engine, _ = open_store()
        result = minted.revoke(engine, token_id)
    if result == "unknown":
        raise die(f"no minted token {token_id!r} (see rr token list)")
    console.print(f"{token_id}: {result}")
