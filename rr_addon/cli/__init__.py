"""The `rr` command."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
import yaml
from rich.console import Console

from rr_addon import settings
from rr_addon.cli import render
from rr_addon.config.load import ConfigErrors
from rr_addon.crypto import Keyring, MasterKeyError, create_key_file, master_keys
from rr_addon.store import config_store
from rr_addon.store.db import DatabaseError, check_schema, make_engine, migrate

app = typer.Typer(
    name="rr",
    help="rr: outbound API governance as a mitmproxy addon.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

ADDON_PATH = Path(__file__).resolve().parent.parent / "addon.py"


def die(message: str) -> typer.Exit:
    """A clear, expected failure: print the message; the caller raises the returned Exit (status 1)."""
    err_console.print(f"[bold red]rr:[/bold red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def _store():
    """Engine and keyring of an initialised database, or exit with the reason."""
    try:
        engine = make_engine()
        check_schema(engine)
        keyring = Keyring(master_keys(settings.home()))
        config_store.check_key(engine, keyring)
    except (DatabaseError, MasterKeyError) as e:
        raise die(str(e)) from None
    return engine, keyring


@app.command()
def init() -> None:
    """Create the master key file, the database schema and the CA (idempotent)."""
    home = settings.home()
    if not os.environ.get("RR_MASTER_KEY"):
        created = create_key_file(home)
        console.print(f"master key: {'created' if created else 'exists'} {home / 'rr.key'}")
    else:
        console.print("master key: from RR_MASTER_KEY")
    try:
        engine = make_engine()
        before, after = migrate(engine)
        keyring = Keyring(master_keys(home))
        fresh = config_store.initialise(engine, keyring)
    except (DatabaseError, MasterKeyError) as e:
        raise die(str(e)) from None
    url = settings.redacted_url(str(engine.url))
    console.print(f"database: {url} schema {after}" + (" (migrated)" if before != after else ""))
    if not fresh:
        console.print("configuration state: exists (unchanged)")
    ca = ensure_ca(settings.confdir())
    console.print(f"CA certificate: {ca}")


def ensure_ca(confdir: Path) -> Path:
    from mitmproxy.certs import CertStore

    confdir.mkdir(parents=True, exist_ok=True)
    CertStore.from_store(confdir, "mitmproxy", 2048)
    return confdir / "mitmproxy-ca-cert.pem"


@app.command(name="migrate")
def migrate_schema() -> None:
    """Upgrade the database schema to this version of rr."""
    try:
        engine = make_engine()
        before, after = migrate(engine)
    except DatabaseError as e:
        raise die(str(e)) from None
    console.print(f"schema {before or '(empty)'} -> {after}")


@app.command()
def apply(
    file: List[Path] = typer.Option(..., "-f", "--file", help="Configuration YAML (repeatable; merged)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and show the changes; write nothing."),
) -> None:
    """Validate FILE(s) and make the stored configuration equal to them (one transaction)."""
    from rr_addon.apply import apply as do_apply
    from rr_addon.apply import prepare

    engine, keyring = _store()
    try:
        prepared = prepare(file, engine, keyring)
    except ConfigErrors as e:
        err_console.print(render.errors_text(e.errors), soft_wrap=True)
        raise typer.Exit(1)
    console.print(render.changes_table(prepared.changes, "planned changes" if dry_run else "changes"))
    if dry_run:
        console.print("dry run: nothing written")
        return
    if not prepared.changed:
        console.print(f"no changes; configuration version stays {prepared.stored.version}")
        return
    try:
        version = do_apply(prepared, engine, keyring, ",".join(str(f) for f in file))
    except config_store.ConcurrentChange as e:
        raise die(str(e)) from None
    console.print(f"[green]applied[/green]: configuration version {version}; running proxies pick it up within seconds")


@app.command()
def export(output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write to this file instead of stdout.")) -> None:
    """Print the stored configuration as YAML. Secrets are never exported."""
    engine, keyring = _store()
    stored = config_store.read(engine, keyring)
    data = stored.config.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    header = (
        f"# rr configuration version {stored.version}\n"
        "# Secrets are not exported; a credential without `secret` keeps its stored secret on `rr apply`.\n"
    )
    text = header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    if output:
        output.write_text(text)
        console.print(f"wrote {output}")
    else:
        sys.stdout.write(text)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    ctx: typer.Context,
    web: bool = typer.Option(False, "--web", help="Run mitmweb (the web UI) instead of mitmdump."),
) -> None:
    """Run the proxy: mitmdump (or mitmweb) with rr loaded. Other arguments go to mitmproxy."""
    _store()  # fail early, with rr's message, if the database or key is not usable
    confdir = settings.confdir()
    if not (confdir / "mitmproxy-ca-cert.pem").exists():
        ensure_ca(confdir)
    args = [
        "--listen-host",
        "127.0.0.1",
        "-p",
        "8080",
        "--set",
        f"confdir={confdir}",
        "--set",
        "connection_strategy=lazy",
        "-s",
        str(ADDON_PATH),
    ]
    if web:
        args += ["--set", "web_open_browser=false"]
    args += list(ctx.args)
    from mitmproxy.tools import main as mitmmain

    err_console.print(
        f"rr: starting {'mitmweb' if web else 'mitmdump'}; CA certificate {confdir / 'mitmproxy-ca-cert.pem'}\n"
        "rr: point a workload at it with the output of `rr env --proxy NAME --credential NAME`",
        soft_wrap=True,
        highlight=False,
    )
    sys.exit(mitmmain.mitmweb(args) if web else mitmmain.mitmdump(args))


@app.command()
def env(
    proxy: str = typer.Option(..., "--proxy", help="Proxy name."),
    credential: str = typer.Option(..., "--credential", help="Proxy credential name."),
    listen: str = typer.Option("127.0.0.1:8080", "--listen", help="host:port the proxy listens on."),
) -> None:
    """Print the environment a workload needs to go through rr."""
    engine, keyring = _store()
    stored = config_store.read(engine, keyring)
    p = next((p for p in stored.config.proxies if p.name == proxy), None)
    if p is None:
        raise die(f"no proxy {proxy!r}") from None
    c = next((c for c in p.credentials if c.name == credential), None)
    if c is None:
        raise die(f"proxy {proxy!r} has no credential {credential!r}") from None
    source = stored.sources.get(("proxies", proxy, credential)) or ""
    notes = []
    if source.startswith("env:"):
        secret = "${" + source[4:] + "}"
    else:
        secret = "<secret>"
        notes.append(f"replace <secret> with the secret of {proxy}/{credential} (rr stores only a digest of it)")
    user = getattr(c, "username", None) or proxy
    ca = settings.confdir() / "mitmproxy-ca-cert.pem"
    url = f"http://{user}:{secret}@{listen}"
    variables = {
        "HTTPS_PROXY": url,
        "HTTP_PROXY": url,
        "SSL_CERT_FILE": str(ca),
        "REQUESTS_CA_BUNDLE": str(ca),
        "NODE_EXTRA_CA_CERTS": str(ca),
    }
    print(render.env_lines(variables, notes))


def main() -> None:
    app()
