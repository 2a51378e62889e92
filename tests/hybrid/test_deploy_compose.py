"""deploy/hybrid/docker-compose.yml is not run here (no Docker offline): it must
parse, hold the layout the README describes, and every command in it must be a
real `rr` subcommand with real options (mitmdump's for `rr run`'s pass-through)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer.main
import yaml

from rr_addon.cli import app

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "hybrid"
COMPOSE = DEPLOY / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def rr_command(argv: list[str]):
    """The (typer's click) command `argv` (starting with `rr`) runs, and the arguments it gets."""
    assert argv[0] == "rr", argv
    cmd = typer.main.get_command(app)
    rest = argv[1:]
    while hasattr(cmd, "commands") and rest and not rest[0].startswith("-"):  # a group (typer vendors click: no isinstance)
        sub = cmd.commands.get(rest[0])
        assert sub is not None, f"`rr {' '.join(argv[1:])}`: {rest[0]!r} is no rr subcommand"
        cmd, rest = sub, rest[1:]
    return cmd, rest


def check_argv(argv: list[str]) -> None:
    """AssertionError unless `argv` is an rr command with options it knows."""
    cmd, rest = rr_command(argv)
    assert not hasattr(cmd, "commands"), f"{argv}: names a group, not a command"
    try:
        ctx = cmd.make_context("rr", list(rest))
    except Exception as e:  # click's UsageError (NoSuchOption, MissingParameter, …)
        raise AssertionError(f"{argv}: {type(e).__name__}: {e}") from None
    if ctx.args:  # `rr run` passes the rest to mitmdump: they must be mitmdump's
        from mitmproxy import options
        from mitmproxy.tools import cmdline

        try:
            cmdline.mitmdump(options.Options()).parse_args(ctx.args)
        except SystemExit:  # argparse said why on stderr
            raise AssertionError(f"{argv}: mitmdump refuses {ctx.args}") from None


def test_the_layout_the_readme_describes(compose):
    services = compose["services"]
    assert set(services) == {"postgres", "control-plane", "dataplane-eu-1", "dataplane-eu-2"}
    cp = services["control-plane"]
    assert cp["command"][:3] == ["rr", "control-plane", "serve"]
    assert cp["environment"]["RR_DATABASE_URL"].startswith("postgresql+psycopg://rr:") and "@postgres:5432/rr" in cp["environment"]["RR_DATABASE_URL"]
    assert cp["depends_on"]["postgres"]["condition"] == "service_healthy"
    names = [cp["command"][i + 1] for i, a in enumerate(cp["command"]) if a == "--name"]
    assert "control-plane" in names  # the host name data planes use, in the server certificate
    homes = set()
    for name in ("dataplane-eu-1", "dataplane-eu-2"):
        dp = services[name]
        env = dp["environment"]
        assert "RR_DATABASE_URL" not in env and "RR_MASTER_KEY" not in env  # a data plane has neither
        argv = dp["command"]
        assert argv[:2] == ["rr", "run"]
        bundle = argv[argv.index("--dataplane-bundle") + 1]
        mounts = {m.split(":")[1]: m for m in dp["volumes"]}
        assert bundle in mounts and mounts[bundle].endswith(":ro"), "the bundle is mounted read-only where rr run reads it"
        home = mounts[env["RR_HOME"]].split(":")[0]
        assert home in compose["volumes"], "each data plane's home is a named volume"
        homes.add(home)
    assert len(homes) == 2, "two data planes never share a home (cache, spool and counters are their own)"
    for svc in services.values():  # every volume a service names is declared
        for m in svc.get("volumes", []):
            source = m.split(":")[0]
            assert source.startswith("./") or source in compose["volumes"], m


def test_every_rr_command_is_real(compose):
    commands = [svc["command"] for svc in compose["services"].values() if isinstance(svc.get("command"), list) and svc["command"][0] == "rr"]
    assert len(commands) == 3
    for argv in commands:
        check_argv(argv)


def test_the_readme_commands_are_real():
    text = (DEPLOY / "README.md").read_text()
    block = text[text.index("## docker compose"):text.index("## Files")]
    lines = [line for line in block.replace("\\\n", " ").splitlines() if "docker compose run" in line]
    argvs = [shlex.split(line.split(" control-plane ", 1)[1].split(" >")[0], comments=True) for line in lines]
    assert len(argvs) == 4
    for argv in argvs:
        check_argv([a.replace("$dp", "eu-1") for a in argv])


def test_the_checker_refuses_what_is_not_rr():
    for argv in (["rr", "control-plane", "serve", "--no-such-flag"], ["rr", "control-plane", "launch"], ["rr", "run", "--dataplane-bundle", "x", "--listen-hots", "0.0.0.0"]):
        with pytest.raises(AssertionError, match=r"no rr subcommand|NoSuchOption|mitmdump refuses"):
            check_argv(argv)


def test_the_image_builds_from_the_repository_root(compose):
    build = compose["x-rr"]["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert (COMPOSE.parent / build["context"] / "pyproject.toml").exists()
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", ".git", "**/rr.key"} <= set(ignored)
    assert re.search(r"^USER rr$", (DEPLOY / "Dockerfile").read_text(), re.M)
