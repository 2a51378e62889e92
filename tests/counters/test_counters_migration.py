import asyncio

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

import rr_addon.store.tables  # noqa: F401  (registers rr_counter on SQLModel.metadata)
from rr_addon.core.quota import CounterOp
from rr_addon.policy.windows import Window
from rr_addon.counters.embedded import EmbeddedBackend
from rr_addon.store.db import alembic_config, make_engine, migrate
from rr_addon.testing.pg import postgres_database


@pytest.fixture
def sqlite_engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'rr.db'}")
    yield engine
    engine.dispose()


@pytest.fixture
def pg_engine(postgres_url):
    """A database of our own on this machine's PostgreSQL, dropped afterwards."""
    with postgres_database(postgres_url, prefix="rr_meters") as url:
        engine = make_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request):
    return request.getfixturevalue("sqlite_engine" if request.param == "sqlite" else "pg_engine")


def counter_diffs(engine):
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return [d for d in compare_metadata(ctx, SQLModel.metadata) if "rr_counter" in repr(d)]


def test_upgrade_creates_the_table_the_model_describes_and_downgrade_removes_it(engine):
    assert migrate(engine)[1] >= "0002"
    assert {c["name"] for c in inspect(engine).get_columns("rr_counter")} == {"key", "value", "expires_at"}
    assert counter_diffs(engine) == []
    command.downgrade(alembic_config(engine), "0001")
    assert "rr_counter" not in inspect(engine).get_table_names()
    migrate(engine)
    assert "rr_counter" in inspect(engine).get_table_names()


def test_embedded_backend_round_trip(engine):
    migrate(engine)
    window = Window("month", 0, 4_102_444_800, "month:x")
    ops = [CounterOp(f"usage:p:c{i}:month:x", 1, None, window) for i in range(3)] + [CounterOp("meter:p:m:-:month:x", 1, 10, window)]
    a, b = EmbeddedBackend(engine), EmbeddedBackend(engine)
    a.start(), b.start()
    for _ in range(4):
        assert a.check_and_add_now(ops).admitted and b.check_and_add_now(ops).admitted
    a.close_sync(), b.close_sync()  # deltas from both add up (upsert on conflict)
    counts = asyncio.run(EmbeddedBackend(engine).read(""))
    assert counts == {**{f"usage:p:c{i}:month:x": 8 for i in range(3)}, "meter:p:m:-:month:x": 8}
