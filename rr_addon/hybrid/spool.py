"""The data plane's local SQLite (`$RR_HOME/dataplane/spool.db`, 0600): the
audit records waiting for delivery to the control plane (`rr_audit`, written
by the usual `audit_store.DatabaseSink`) and the embedded meter counters
(`rr_counter`), and rotated OAuth refresh tokens (`rr_oauth_refresh_token`,
encrypted under a key derived from the bundle: rr_addon.hybrid.grants). Nothing
in it is in clear that is secret."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import delete, func, inspect, select
from sqlalchemy.engine import Engine

from rr_addon.store import audit_store
from rr_addon.store.db import make_engine
from rr_addon.store.tables import CounterRow, OAuthRefreshTokenRow

TABLES = [audit_store.TABLE, CounterRow.__table__, OAuthRefreshTokenRow.__table__]  # type: ignore[attr-defined]


def open_spool(directory: Path) -> Engine:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = make_engine(f"sqlite:///{directory / 'spool.db'}")
    for table in TABLES:
        table.create(engine, checkfirst=True)
        _add_missing_columns(engine, table)
    return engine


def _add_missing_columns(engine: Engine, table) -> None:
    """A spool written by an older rr lacks the columns a newer one added: add them
    (nullable), so records still waiting in it are delivered after an upgrade."""
    with engine.begin() as conn:
        have = {c["name"] for c in inspect(conn).get_columns(table.name)}
        for column in table.columns:
            if column.name not in have:
                kind = column.type.compile(dialect=engine.dialect)
                conn.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')


def oldest(engine: Engine, limit: int) -> list[dict]:
    """Up to `limit` undelivered audit records, oldest first, with their spool `id`."""
    with engine.connect() as conn:
        rows = conn.execute(select(audit_store.TABLE).order_by(audit_store.TABLE.c.id).limit(limit)).all()
    return [audit_store.record_from_row(r) for r in rows]


def delivered(engine: Engine, ids: list[int]) -> None:
    with engine.begin() as conn:
        conn.execute(delete(audit_store.TABLE).where(audit_store.TABLE.c.id.in_(ids)))


def pending(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(audit_store.TABLE)).scalar_one()
