"""Prepare an RR_HOME (init + apply) through the real CLI, in-process.

With RR_TEST_DATABASE=postgres each home gets a database of its own on this
machine's PostgreSQL (dropped when the test process exits); its URL is kept in
`<home>/database-url`, which rr_cli and ProxyProcess pick up."""

from __future__ import annotations

import atexit
import json
import os
from pathlib import Path

from typer.testing import CliRunner

from rr_addon.cli import app
from rr_addon.testing.wait import eventually

POSTGRES_ADMIN_URL = os.environ.get("RR_TEST_POSTGRES_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
URL_FILE = "database-url"


def database_url(home: Path) -> str | None:
    f = home / URL_FILE
    return f.read_text().strip() if f.exists() else None


def create_postgres_database() -> str:
    """A database of its own for a home (rr_addon.testing.pg), dropped when the test process exits."""
    from rr_addon.testing.pg import postgres_database

    made = postgres_database(POSTGRES_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://", 1), prefix="rr_e2e")
    url = made.__enter__()
    atexit.register(_drop, made)
    return url


def _drop(made) -> None:
    try:
        made.__exit__(None, None, None)
    except Exception:  # the server may be gone at exit: nothing to drop
        pass


def rr_cli(home: Path, *args: str, env: dict[str, str] | None = None, check: bool = True, input: str | None = None):
    env = {"RR_HOME": str(home), "RR_DATABASE_URL": database_url(home), "RR_MASTER_KEY": None, "COLUMNS": "200", **(env or {})}
    result = CliRunner().invoke(app, list(args), env=env, input=input)
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


def audit_record(home: Path, request_id: str, *, proxy: str | None = None, limit: int | None = None) -> dict:
    """The audit record of `request_id` from `rr audit --json` (of `proxy`, among the last
    `limit`), once written: the audit writer stores records in batches, after the response."""
    args = ["audit", "--json", *(["--proxy", proxy] if proxy else []), *(["--limit", str(limit)] if limit else [])]

    def find() -> dict | None:
        records = (json.loads(line) for line in rr_cli(home, *args).output.splitlines())
        return next((r for r in records if r["request_id"] == request_id), None)

    return eventually(find, what=f"the audit record of {request_id}")
