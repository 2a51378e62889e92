"""A PostgreSQL database of a test's own on the real server, dropped afterwards (never the shared one)."""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool


@contextmanager
def postgres_database(admin_url: str, prefix: str = "rr_test") -> Iterator[str]:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    _admin(admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        _admin(admin_url, f'DROP DATABASE "{name}" WITH (FORCE)')


def _admin(admin_url: str, statement: str) -> None:
    # no pooled connection is kept between CREATE and DROP: a home's database lives until the
    # test process exits, and an idle admin connection per home exhausted the server's 100
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()
