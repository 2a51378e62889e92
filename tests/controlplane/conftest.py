"""Fixtures of the control-plane store tests."""

from __future__ import annotations

import pytest

from rr_addon.store.db import make_engine, migrate


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    """A migrated store on SQLite and on PostgreSQL (a database of this test's own)."""
    url = f"sqlite:///{tmp_path / 'rr.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    engine = make_engine(url)
    migrate(engine)
    yield engine
    engine.dispose()
