"""Shared fixtures. Service-backed tests skip with a reason on a laptop without
PostgreSQL/Redis, and fail instead when RR_REQUIRE_SERVICES=1 (CI)."""

from __future__ import annotations

import os
import socket

import pytest
from hypothesis import HealthCheck, settings

# Property tests measure correctness, never speed: no per-example deadline (a busy 2-core CI
# machine misses Hypothesis's default 200 ms), and no health check that times data generation.
settings.register_profile("rr", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("rr")

POSTGRES_URL = os.environ.get("RR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("RR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if os.environ.get("RR_REQUIRE_SERVICES") == "1":
        pytest.fail(message + " (RR_REQUIRE_SERVICES=1: service-backed tests must run)")
    pytest.skip(message + "; start it to run this test")


@pytest.fixture
def make_home(tmp_path, monkeypatch):
    """The one factory of an RR_HOME for in-process CLI tests: RR_HOME is `tmp_path`, no
    database URL or master key leaks in from outside, `env` is set, the CLI's consoles are
    `width` wide (they took their width when first imported), and `rr init` has run
    unless `init=False`."""
    from typer.testing import CliRunner

    from rr_addon import cli

    def make(*, init: bool = True, env: dict[str, str] | None = None, width: int | None = 250):
        monkeypatch.setenv("RR_HOME", str(tmp_path))
        monkeypatch.delenv("RR_DATABASE_URL", raising=False)
        monkeypatch.delenv("RR_MASTER_KEY", raising=False)
        for k, v in (env or {}).items():
            monkeypatch.setenv(k, v)
        if width is not None:
            # the raw attribute, not the `width` property: undoing a property restores the width
            # computed at this moment (COLUMNS of this test) and would freeze it for later tests
            monkeypatch.setattr(cli.console, "_width", width)
            monkeypatch.setattr(cli.err_console, "_width", width)
        if init:
            result = CliRunner().invoke(cli.app, ["init"])
            assert result.exit_code == 0, result.output
        return tmp_path

    return make


@pytest.fixture(scope="session")
def redis_url() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return REDIS_URL


@pytest.fixture(scope="session")
def postgres_url() -> str:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return POSTGRES_URL


@pytest.fixture
def pg_url(postgres_url):
    """A database of this test's own on the real server, dropped afterwards."""
    from rr_addon.testing.pg import postgres_database

    with postgres_database(postgres_url) as url:
        yield url


@pytest.fixture(scope="module")
def module_pg_url(postgres_url):
    """Like `pg_url`, shared by the tests of one module."""
    from rr_addon.testing.pg import postgres_database

    with postgres_database(postgres_url) as url:
        yield url


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """A test CA with a server certificate for 127.0.0.1 (rr_addon.testing.certs)."""
    from rr_addon.testing.certs import make_pki

    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def upstream(pki):
    """A local TLS upstream that records what it receives (shared: tests tell their requests
    apart by path, e.g. a uuid in it)."""
    from rr_addon.testing.upstream import Upstream

    with Upstream(pki) as up:
        yield up


@pytest.fixture(scope="session")
def plain_upstream():
    """The same upstream over plain HTTP."""
    from rr_addon.testing.upstream import Upstream

    with Upstream(None) as up:
        yield up
