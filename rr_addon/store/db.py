"""Engines, sessions and schema management. The only module that opens connections."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence, TypeVar

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, create_engine

from rr_addon import settings

T = TypeVar("T")

MIGRATIONS = Path(__file__).parent / "migrations"

# Alembic announces its dialect at INFO on every schema check; rr reports what matters itself.
logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)


class DatabaseError(Exception):
    """The database cannot be used; the message says why and what to do."""


POINT_AT_A_HOME = (
    "run `rr init` to create one here, or point rr at an initialised one with RR_HOME=/path/to/home "
    "(its rr.db, rr.key and certs/) or RR_DATABASE_URL=sqlite:///path/to/rr.db or postgresql+psycopg://…"
)


def make_engine(url: str | None = None, *, existing: bool = False) -> Engine:
    """An engine for `url` (default: RR_DATABASE_URL, else $RR_HOME/rr.db). With
    `existing`, an embedded database that is not there is an error, not created:
    commands other than `rr init`/`rr migrate` must leave a wrong directory as it was."""
    url = settings.database_url(url)
    try:
        parsed = make_url(url)
    except Exception:
        raise DatabaseError("RR_DATABASE_URL is not a valid database URL") from None
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("", "psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")  # the driver we ship
    kwargs: dict = {}
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if db and db != ":memory:":
            parent = Path(db).parent
            if not parent.is_dir():
                raise DatabaseError(f"cannot open database {db}: directory {parent} does not exist")
            if not Path(db).exists() and existing:
                raise DatabaseError(f"no rr database at {db}: {settings.home()} is not initialised: {POINT_AT_A_HOME}")
            if not Path(db).exists():
                # create it private: it holds ciphertext and digests, but no one else needs them
                Path(db).touch(mode=0o600)
        kwargs["connect_args"] = {"timeout": 10, "check_same_thread": False}
    else:
        kwargs["pool_pre_ping"] = True
        kwargs["connect_args"] = {"connect_timeout": 5}
    engine = create_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def fixed_chunks(items: Sequence[T], largest: int = 256) -> Iterator[Sequence[T]]:
    """`items` in chunks whose sizes are powers of 4 up to `largest` (256, 64, 16, 4, 1)."""
    i, n = 0, len(items)
    size = largest
    while i < n:
        while size > n - i:
            size //= 4
        yield items[i : i + size]
        i += size


def sqlite_insert_many(conn: Any, head: str, rows: Sequence[tuple], tail: str = "", largest: int = 256) -> None:
    """`{head} VALUES (?, …), (?, …) … {tail}` for equal-width `rows`, on SQLite.

    The background writers' way to SQLite: the driver releases the GIL around
    every statement step, and executemany is one step per row, so each row forced
    the event loop thread to hand the GIL back (measured in docs/performance.md);
    a multi-row statement is one step per chunk. Chunks come in five sizes
    (`fixed_chunks`) because the driver caches a prepared statement per SQL text
    (128 per connection) and one of 256 rows x 28 columns is about half a megabyte.
    `largest` x the row width must stay within SQLite's 32,766 variables."""
    if not rows:
        return
    one = "(" + ", ".join("?" * len(rows[0])) + ")"
    for chunk in fixed_chunks(rows, largest):
        conn.exec_driver_sql(f"{head} VALUES {', '.join([one] * len(chunk))} {tail}", tuple(v for r in chunk for v in r))


@contextmanager
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as s:
        yield s


def alembic_config(engine: Engine) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str:
    script = ScriptDirectory(str(MIGRATIONS))
    return script.get_current_head()


def current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as e:
        raise DatabaseError(f"cannot open database {redacted_url(str(engine.url))}: {_first_line(e)}") from None


def migrate(engine: Engine) -> tuple[str | None, str]:
    """Upgrade the schema to head. Returns (before, after)."""
    before = current_revision(engine)
    try:
        command.upgrade(alembic_config(engine), "head")
    except SQLAlchemyError as e:
        raise DatabaseError(f"migration failed on {redacted_url(str(engine.url))}: {_first_line(e)}") from None
    return before, head_revision()


def check_schema(engine: Engine) -> None:
    """Raise DatabaseError unless the schema is at the head revision."""
    current = current_revision(engine)
    head = head_revision()
    if current is None:
        raise DatabaseError(f"database {redacted_url(str(engine.url))} is not initialised: {POINT_AT_A_HOME}")
    if current != head:
        raise DatabaseError(f"database schema is at {current}, this rr needs {head}: run `rr migrate`")


def _first_line(e: Exception) -> str:
    text = str(getattr(e, "orig", None) or e)
    return text.strip().splitlines()[0] if text.strip() else type(e).__name__


def redacted_url(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"
