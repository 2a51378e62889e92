"""Prepare an RR_HOME (init + apply) through the real CLI, in-process."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from rr_addon.cli import app


def rr_cli(home: Path, *args: str, env: dict[str, str] | None = None, check: bool = True):
    env = {"RR_HOME": str(home), "RR_DATABASE_URL": None, "RR_MASTER_KEY": None, "COLUMNS": "200", **(env or {})}
    result = CliRunner().invoke(app, list(args), env=env)
    if check and result.exit_code != 0:
        raise AssertionError(f"rr {' '.join(args)} failed ({result.exit_code}):\n{result.output}")
    return result


def prepare_home(home: Path, policy: str, env: dict[str, str] | None = None) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    (home / "policy.yaml").write_text(policy)
    rr_cli(home, "init", env=env)
    rr_cli(home, "apply", "-f", str(home / "policy.yaml"), env=env)
    return home
