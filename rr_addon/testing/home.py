"""Prepare an RR_HOME (init + apply) through the real CLI, in-process.

With RR_TEST_DATABASE=postgres each home gets a database of its own on this
machine's PostgreSQL (dropped when the test process exits); its URL is kept in
`<home>/database-url`, which rr_cli and ProxyProcess pick up."""

from __future__ import annotations

import atexit
import os
import uuid
from pathlib import Path

from typer.testing import CliRunner

from rr_addon.cli import app

POSTGRES_ADMIN_URL = os.environ.get("RR_TEST_POSTGRES_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
URL_FILE = "database-url"


def database_url(home: Path) -> str | None:
    f = home / URL_FILE
    return f.read_text().strip() if f.exists() else None


def create_postgres_database() -> str:
    import psycopg

    name = f"rr_e2e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    atexit.register(_drop, name)
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}"


def _drop(name: str) -> None:
    import psycopg

    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except psycopg.Error:
        pass


def rr_cli(home: Path, *args: str, env: dict[str, str] | None = None, check: bool = True):
    env = {"RR_HOME": str(home), "RR_DATABASE_URL": database_url(home), "RR_MASTER_KEY": None, "COLUMNS": "200", **(env or {})}
    result = CliRunner().invoke(app, list(args), env=env)
    if check and result.exit_code != 0:
        raise AssertionError(f"rr {' '.join(args)} failed ({result.exit_code}):\n{result.output}")
    return result


def prepare_home(home: Path, policy: str, env: dict[str, str] | None = None) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    if os.environ.get("RR_TEST_DATABASE") == "postgres" and not (env or {}).get("RR_DATABASE_URL") and database_url(home) is None:
        (home / URL_FILE).write_text(create_postgres_database())
    (home / "policy.yaml").write_text(policy)
    rr_cli(home, "init", env=env)
    rr_cli(home, "apply", "-f", str(home / "policy.yaml"), "--prune", env=env)  # a home may be prepared again with a smaller policy
    return home
