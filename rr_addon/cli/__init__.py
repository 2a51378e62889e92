"""The `rr` command."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from rr_addon import settings
from rr_addon.cli import envvars, remote, render
from rr_addon.cli import approvals, controlplane, ops, secrets, tokens, usage
from rr_addon.cli.common import console, die, dispose_engines, err_console, load_snapshot, open_store, read_stored
from rr_addon.reports import export_text
from rr_addon.config.load import ConfigErrors
from rr_addon.core.terminal import printable
from rr_addon.crypto import Keyring, MasterKeyError, create_key_file, master_keys
from rr_addon.store import config_store
from rr_addon.store.db import DatabaseError, make_engine, migrate, redacted_url

app = typer.Typer(
    name="rr",
    help="rr: outbound API governance as a mitmproxy addon.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _lifecycle(ctx: typer.Context) -> None:
    ctx.call_on_close(dispose_engines)


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
    url = redacted_url(str(engine.url))
    console.print(f"database: {url} schema {after}" + (" (migrated)" if before != after else ""))
    if not fresh:
        console.print("configuration state: exists (unchanged)")
    engine.dispose()
    from rr_addon.mitm.certs import ensure_ca

    ca = ensure_ca(settings.confdir())
    console.print(f"CA certificate: {ca}")


@app.command(name="migrate")
def migrate_schema() -> None:
    """Upgrade the database schema to this version of rr."""
    try:
        engine = make_engine()
        before, after = migrate(engine)
    except DatabaseError as e:
        raise die(str(e)) from None
    engine.dispose()
    console.print(f"schema {before or '(empty)'} -> {after}")


@app.command()
def apply(
    file: List[Path] = typer.Option(..., "-f", "--file", help="Configuration YAML (repeatable; merged)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and show the changes; write nothing."),
    prune: bool = typer.Option(
        False, "--prune", "--yes", "-y", help="Delete stored objects the files no longer declare, without asking (for scripts)."
    ),
    allow_empty: bool = typer.Option(False, "--allow-empty", help="Accept files that declare no target and no proxy."),
    server: Optional[str] = remote.server_option(),
    admin: Optional[Path] = remote.admin_option(),
) -> None:
    """Validate FILE(s) and make the stored configuration equal to them (one transaction).

    Objects the files do not declare are deleted: on a terminal rr asks first;
    elsewhere it refuses unless --prune is given. Files that declare nothing at
    all are refused unless --allow-empty is given."""
    from rr_addon.apply import apply as do_apply
    from rr_addon.apply import prepare

    if server:
        return remote.apply(server, admin, file, dry_run=dry_run, prune=prune, allow_empty=allow_empty)
    engine, keyring = open_store()
    try:
        prepared = prepare(file, engine, keyring)
    except ConfigErrors as e:
        err_console.print(render.errors_text(e.errors), soft_wrap=True)
        raise typer.Exit(1)
    for message in prepared.stored.broken.values():
        err_console.print(f"rr: {printable(message)}", highlight=False, soft_wrap=True, markup=False)
    if prepared.warnings:
        err_console.print(render.warnings_text(prepared.warnings), soft_wrap=True)
    table = render.changes_table(prepared.changes, "planned changes" if dry_run else "changes")
    files = ", ".join(str(f) for f in file)
    empty = f"{files} declare{'s' if len(file) == 1 else ''} no target and no proxy"
    deletes = ", ".join(f"{c.kind} {c.name}" for c in prepared.deletes)
    if not dry_run:
        # consent first: nothing is written (not even a trial write) before it is given
        if prepared.empty and not allow_empty:
            console.print(table)
            raise die(f"{empty}; nothing was written. Pass --allow-empty if the configuration really is meant to be empty")
        if prepared.deletes and not prune:
            console.print(table)
            table = None
            if not (sys.stdin.isatty() and sys.stdout.isatty()):
                raise die(
                    f"this apply would delete {len(prepared.deletes)} object(s) that {files} {'does' if len(file) == 1 else 'do'} not declare: {deletes}. "
                    "Nothing was written. Pass --prune to delete them, or add them to the files to keep them"
                )
            if not typer.confirm(f"delete {len(prepared.deletes)} object(s) the files do not declare ({deletes})?", default=False):
                raise die("nothing was written")
    try:
        if dry_run or prepared.changed:
            # also on a dry run: write, load the written rows as a proxy would, roll back
            version = do_apply(prepared, engine, keyring, ",".join(str(f) for f in file), dry_run=dry_run)
    except ConfigErrors as e:
        err_console.print(render.errors_text(e.errors), soft_wrap=True)
        raise typer.Exit(1)
    except config_store.ConcurrentChange as e:
        raise die(str(e)) from None
    if table is not None:
        console.print(table)
    if dry_run:
        if prepared.empty and not allow_empty:
            console.print(f"note: {empty}; applying it needs --allow-empty", markup=False, highlight=False)
        if prepared.deletes and not prune:
            console.print(f"note: applying this deletes {len(prepared.deletes)} object(s) ({deletes}); it needs --prune or a yes on a terminal", markup=False, highlight=False)
        console.print("dry run: nothing written")
        return
    if not prepared.changed:
        console.print(f"no changes; configuration version stays {prepared.stored.version}")
        return
    console.print(f"[green]applied[/green]: configuration version {version}; running proxies pick it up within seconds")


@app.command()
def export(
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write to this file instead of stdout."),
    server: Optional[str] = remote.server_option(),
    admin: Optional[Path] = remote.admin_option(),
) -> None:
    """Print the stored configuration as YAML. Secrets are never exported."""
    if server:
        return remote.export(server, admin, output)
    engine, keyring = open_store()
    text = export_text(read_stored(engine, keyring))
    if output:
        output.write_text(text)
        console.print(f"wrote {output}")
    else:
        sys.stdout.write(text)


@app.command(name="schema")
def schema_command(
    markdown: bool = typer.Option(False, "--markdown", help="Print the policy reference (docs/policy.md) instead of the JSON Schema."),
) -> None:
    """Print the JSON Schema of policy files (for editors: `# yaml-language-server: $schema=PATH`)."""
    from rr_addon.config import reference

    sys.stdout.write(reference.markdown() if markdown else reference.json_schema_text())


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    ctx: typer.Context,
    web: bool = typer.Option(False, "--web", help="Run mitmweb (the web UI) instead of mitmdump."),
    control_plane: Optional[str] = typer.Option(
        None, "--control-plane", help="Hybrid data plane: the control plane's https://HOST:PORT (default: the bundle's). No database needed."
    ),
    bundle: Optional[Path] = typer.Option(
        None, "--dataplane-bundle", help="Hybrid data plane: the bundle `rr control-plane issue-dataplane NAME` wrote (docs/hybrid.md)."
    ),
    workers: Optional[int] = typer.Option(
        None,
        "--workers",
        help="mitmdump processes sharing the listen port (SO_REUSEPORT); more than one needs Redis counters. "
        "Default: one; mitmweb and a hybrid data plane are always one.",
    ),
) -> None:
    """Run the proxy: mitmdump (or mitmweb) with rr loaded. Other arguments go to mitmproxy.

    rr's defaults (127.0.0.1:8080, confdir $RR_HOME/certs, lazy connections; for --web no browser
    and a Comment column) yield to the options you pass; connection_strategy=eager is refused.

    Only the mitmproxy addons the options ask for are loaded (see rr_addon/mitm/runner.py); flows are
    printed with -v or --set flow_detail=N."""
    from rr_addon import workers as worker_pool

    args = list(ctx.args)
    if bundle is not None and workers is not None and workers > 1:
        raise die(f"--workers {workers}: a hybrid data plane runs as one process (its configuration link, cache and audit spool are its own); leave out --workers")
    if control_plane and bundle is None:
        raise die("--control-plane needs --dataplane-bundle FILE (written by `rr control-plane issue-dataplane NAME`)")
    if bundle is not None:  # hybrid: the configuration comes from the control plane, no database
        from rr_addon.hybrid import bundle as bundles

        try:
            bundles.read(bundle)
            if control_plane:
                bundles.check_url(control_plane)
        except bundles.BundleError as e:
            raise die(str(e)) from None
        settings.home().mkdir(parents=True, exist_ok=True)
        args = ["--set", f"rr_dataplane_bundle={bundle.resolve()}", *(["--set", f"rr_control_plane={control_plane}"] if control_plane else []), *args]
    try:
        n = 1 if bundle is not None else worker_pool.count(workers, web=web, args=args)
    except worker_pool.WorkersError as e:
        raise die(str(e)) from None
    if bundle is None:
        open_store()  # fail early, with rr's message, if the database or key is not usable
    confdir = settings.confdir()
    from rr_addon.mitm import runner
    from rr_addon.mitm.certs import ensure_ca

    if not (confdir / "mitmproxy-ca-cert.pem").exists():
        ensure_ca(confdir)

    err_console.print(
        f"rr: starting {'mitmweb' if web else 'mitmdump'}\n"
        "rr: point a workload at it with the output of `rr env --proxy NAME --credential NAME`",
        soft_wrap=True,
        highlight=False,
    )
    if n > 1:
        try:
            sys.exit(worker_pool.supervise(args, n))
        except worker_pool.WorkersError as e:
            raise die(str(e)) from None
    # rr's defaults (runner.defaults) come first: every option the user passes wins
    sys.exit(runner.run(args, web=web, base=runner.defaults(web=web)))


@app.command()
def env(
    proxy: str = typer.Option(..., "--proxy", help="Proxy name."),
    credential: str = typer.Option(..., "--credential", help="Proxy credential name."),
    listen: Optional[str] = typer.Option(
        None, "--listen", help="host:port the proxy listens on (default: where a running data plane listens, else 127.0.0.1:8080)."
    ),
    no_proxy: str = typer.Option(
        envvars.DEFAULT_NO_PROXY, "--no-proxy", help="Hosts clients reach directly, not through rr (NO_PROXY; empty: none)."
    ),
) -> None:
    """Print the environment a workload needs to go through rr (git, curl, wget, pip, Python, npm, Node, Go; see docs/clients.md)."""
    engine, keyring = open_store()
    stored = read_stored(engine, keyring)
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
    if listen is None:
        from rr_addon.store import dataplanes

        live = [p.listen for p in dataplanes.list_planes(engine) if not p.stale and p.listen]
        listen, note = envvars.listen_from_planes(live)
        if note:
            notes.append(note)
    user = getattr(c, "username", None) or proxy
    ca = settings.confdir() / "mitmproxy-ca-cert.pem"
    bundle = envvars.write_bundle(ca, settings.confdir())
    wgetrc = envvars.write_wgetrc(bundle or ca, settings.confdir())
    variables, more = envvars.client_environment(f"http://{user}:{secret}@{listen}", ca, bundle, no_proxy, wgetrc)
    print(render.env_lines(variables, notes + more))


@app.command()
def explain(
    method: str = typer.Argument(..., help="HTTP method, e.g. GET."),
    url: str = typer.Argument(..., help="The request URL, e.g. https://api.stripe.com/v1/charges?limit=3"),
    credential: Optional[str] = typer.Option(None, "--credential", help="Proxy credential as PROXY/NAME (or NAME if unique)."),
    token: Optional[str] = typer.Option(
        None, "--token", help="Instead of --credential: a caller token or key, found or verified (JWKS, introspection) as the proxy would."
    ),
    header: List[str] = typer.Option([], "-H", "--header", help="Request header 'Name: value' (repeatable)."),
    data: Optional[str] = typer.Option(None, "-d", "--data", help="Request body (JSON bodies get content-type application/json unless -H sets one)."),
    claim: List[str] = typer.Option([], "--claim", help="A verified token claim 'name=value' (repeatable), for credentials that verify tokens."),
    server: Optional[str] = remote.server_option(),
    admin: Optional[Path] = remote.admin_option(),
) -> None:
    """Show the decision the proxy would make for this request, every scope and rule, as a tree."""
    from rr_addon.cli import explaining
    from rr_addon.explanation import explanation_tree

    try:
        headers, claims = explaining.parse_headers(header), explaining.parse_claims(claim)
        if server:
            return remote.explain(server, admin, method, url, headers, data, credential, token, claims)
        if (credential is None) == (token is None):
            raise explaining.Unexplainable("give exactly one of --credential or --token")
        engine, keyring = open_store()
        snap = load_snapshot(engine, keyring)
        facts = explaining.facts_of(method, url, headers, data)
        done = explaining.explain(snap, method, url, facts, credential, token, claims)
    except explaining.Unexplainable as e:
        raise die(str(e)) from None
    for line in done.notes:
        console.print(line)
    console.print(explanation_tree(done.title, done.explanation))
    if done.exit_code:
        raise typer.Exit(done.exit_code)


# Subcommands of their own modules (imported at the top: they need only rr_addon.cli.common).
app.add_typer(ops.audit_app, name="audit")
app.command("status")(ops.status)
app.add_typer(usage.usage_app, name="usage")
app.add_typer(tokens.token_app, name="token")
app.add_typer(secrets.secret_app, name="secret")
app.add_typer(controlplane.cp_app, name="control-plane")
approvals.register(app)


def main() -> None:
    app()
