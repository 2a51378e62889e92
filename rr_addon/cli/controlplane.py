"""`rr control-plane …`: serve the configuration to hybrid data planes, issue
and revoke their bundles and admin tokens (docs/hybrid.md)."""

from __future__ import annotations

import json
import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, List

import typer

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from rr_addon.hybrid.registry import Keys

cp_app = typer.Typer(
    help="Hybrid deployment: serve the configuration to data planes that have no database access (docs/hybrid.md).",
    no_args_is_help=True,
)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def _name(value: str, what: str) -> str:
    from rr_addon.cli import die

    if not NAME.match(value):
        raise die(f"{what} {value!r}: use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return value


def _issuing(name: str, what: str, url: str) -> tuple[str, Engine, Keys]:
    """What every issue-… command starts with: NAME and --url checked (a clear
    error each), then the store opened. The URL as checked, the engine and the
    control plane's keys."""
    from rr_addon.cli.common import die, open_store
    from rr_addon.hybrid import bundle as bundles
    from rr_addon.hybrid import registry

    _name(name, what)
    try:
        url = bundles.check_url(url)
    except bundles.BundleError as e:
        raise die(str(e)) from None
    engine, keyring = open_store()
    return url, engine, registry.keys(engine, keyring)


def _write_private(text: str, output: str, default: str) -> str:
    from rr_addon.hybrid import bundle as bundles

    if output == "-":
        sys.stdout.write(text + "\n")
        return "standard output"
    path = Path(output or default)
    bundles.write_private(path, text)
    return str(path)


@cp_app.command("serve")
def serve(
    listen_host: str = typer.Option("127.0.0.1", "--listen-host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8443, "--port", "-p", help="Port to listen on."),
    name: List[str] = typer.Option([], "--name", help="A host name or address data planes use to reach this control plane (repeatable; goes into its TLS certificate)."),
) -> None:
    """Serve the configuration (sealed per data plane, mutual TLS), receive heartbeats, audit records and usage."""
    from rr_addon.cli.common import open_store, die, err_console
    from rr_addon.cli import served
    from rr_addon.hybrid import server

    engine, keyring = open_store()

    def ready(bound: int) -> None:
        names = name or server.default_names(listen_host)
        err_console.print(f"rr control plane: listening on https://{listen_host}:{bound} (certificate names: {', '.join(names)})", soft_wrap=True, highlight=False)

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve(engine, keyring, listen_host, port, name or server.default_names(listen_host), ready=ready, handlers=served.handlers())
    except OSError as e:
        raise die(f"cannot listen on {listen_host}:{port}: {e.strerror or e}") from None
    except KeyboardInterrupt:
        err_console.print("rr control plane: stopped", highlight=False)


@cp_app.command("issue-dataplane")
def issue_dataplane(
    dataplane: str = typer.Argument(..., metavar="NAME", help="The data plane's name (shown in rr status and the audit trail)."),
    url: str = typer.Option(..., "--url", help="https://HOST:PORT at which the data plane reaches this control plane."),
    output: str = typer.Option("", "-o", "--output", help="Write the bundle here (default: NAME.rr-bundle.json; '-': standard output)."),
    force: bool = typer.Option(False, "--force", help="Re-issue an existing data plane: its old bundle stops working."),
) -> None:
    """Issue data plane NAME: write the bundle (mode 0600) that `rr run --dataplane-bundle FILE` needs to join."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from rr_addon.cli.common import console, die
    from rr_addon.hybrid import bundle as bundles
    from rr_addon.hybrid import pki, registry, sealing

    url, engine, keys = _issuing(dataplane, "data plane name", url)
    cert, key = keys.ca.client(dataplane)
    seal = X25519PrivateKey.generate()
    if not registry.issue(engine, dataplane, pki.pem_fingerprint(cert), sealing.raw_public(seal.public_key()), replace=force):
        raise die(f"data plane {dataplane!r} exists; --force re-issues it (its current bundle stops working)")
    b = bundles.Bundle(dataplane, url, keys.ca_pem, cert, key, sealing.raw_private(seal), sealing.raw_public(keys.signer.public_key()))
    where = _write_private(b.as_json(), output, f"{dataplane}.rr-bundle.json")
    if output != "-":
        console.print(f"issued data plane {dataplane}: bundle {where} (a credential: keep it 0600, move it to the data plane only)", soft_wrap=True)
        console.print(f"run it with: rr run --dataplane-bundle {where}", soft_wrap=True, markup=False, highlight=False)


@cp_app.command("revoke-dataplane")
def revoke_dataplane(dataplane: str = typer.Argument(..., metavar="NAME")) -> None:
    """Revoke data plane NAME: the control plane refuses its bundle from the next request on."""
    from rr_addon.cli.common import open_store, console, die
    from rr_addon.hybrid import registry

    engine, _ = open_store()
    result = registry.revoke(engine, dataplane)
    if result == "unknown":
        raise die(f"no data plane {dataplane!r} was issued")
    console.print(f"data plane {dataplane}: {result}")


@cp_app.command("list")
def list_dataplanes(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The issued data planes (rr status shows the running ones)."""
    from rich.table import Table

    from rr_addon.cli.common import open_store, console
    from rr_addon.hybrid import registry

    engine, _ = open_store()
    rows = registry.listing(engine)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="issued data planes", title_justify="left")
    for c in ("name", "issued", "revoked", "certificate sha256"):
        table.add_column(c)
    for r in rows:
        table.add_row(r["name"], r["issued_at"], r["revoked_at"] or "-", r["cert_sha256"][:16] + "…")
    console.print(table)


@cp_app.command("issue-admin")
def issue_admin(
    admin: str = typer.Argument(..., metavar="NAME", help="Who the token is for (shown in the control plane's log)."),
    url: str = typer.Option(..., "--url", help="https://HOST:PORT at which operators reach this control plane."),
    output: str = typer.Option("", "-o", "--output", help="Write the admin credential here (default: NAME.rr-admin.json; '-': standard output)."),
    force: bool = typer.Option(False, "--force", help="Replace NAME's token (the old one stops working)."),
) -> None:
    """Issue an admin credential for `--server URL --admin FILE` (rr apply, export, usage, audit, status)."""
    from rr_addon.cli.common import console, die
    from rr_addon.hybrid import registry, remote

    url, engine, keys = _issuing(admin, "admin name", url)
    token = registry.issue_admin(engine, admin, replace=force)
    if token is None:
        raise die(f"admin {admin!r} exists; --force replaces the token")
    where = _write_private(remote.credential_json(admin, url, keys.ca_pem, token), output, f"{admin}.rr-admin.json")
    if output != "-":
        console.print(f"issued admin {admin}: credential {where} (use: rr … --server {url} --admin {where})", soft_wrap=True, markup=False, highlight=False)


@cp_app.command("revoke-admin")
def revoke_admin(admin: str = typer.Argument(..., metavar="NAME")) -> None:
    """Revoke admin NAME's token."""
    from rr_addon.cli.common import open_store, console, die
    from rr_addon.hybrid import registry

    engine, _ = open_store()
    result = registry.revoke_admin(engine, admin)
    if result == "unknown":
        raise die(f"no admin {admin!r}")
    console.print(f"admin {admin}: {result}")
