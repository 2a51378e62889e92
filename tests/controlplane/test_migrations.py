"""Migrations 0001 -> head keep every row, on SQLite and on this machine's
PostgreSQL, and the migrated schema is exactly what the models describe."""

from __future__ import annotations

import os

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from cryptography.fernet import Fernet
from sqlalchemy import MetaData, inspect, select, text
from sqlmodel import SQLModel

import rr_addon.store.tables  # noqa: F401
from rr_addon.audit import records as audit
from rr_addon.policy import schema
from rr_addon.core.digests import token_digest
from rr_addon.crypto import Keyring
from rr_addon.store import audit_store, config_store, dataplanes
from rr_addon.store.db import alembic_config, check_schema, current_revision, head_revision, make_engine, migrate

MINE = ("rr_audit", "rr_dataplane")
CONFIG = {
    "targets": [
        {"name": "stripe", "hosts": ["api.stripe.com"], "credentials": [{"name": "live", "kind": "bearer", "secret": "sk_live_x"}]},
    ],
    "proxies": [
        {
            "name": "billing",
            "targets": [{"target": "stripe", "credential": "live"}],
            "credentials": [{"name": "agent-1", "auth": "api_key", "secret": "caller-1"}],
        }
    ],
}


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'rr.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    engine = make_engine(url)
    yield engine
    engine.dispose()


def insert_0001_rows(engine, keyring: Keyring) -> None:
    """A real configuration, written through the schema as it was at 0001 (reflected, not today's models)."""
    md = MetaData()
    md.reflect(engine)
    config = schema.Config.model_validate(CONFIG)
    hmac_key = os.urandom(32)
    target, proxy = config.targets[0], config.proxies[0]
    with engine.begin() as conn:
        conn.execute(
            md.tables["rr_config_state"].insert(),
            [dict(id=1, version=1, updated_at=config_store.utcnow(), applied_from="policy.yaml", hmac_key_enc=keyring.encrypt(hmac_key))],
        )
        conn.execute(md.tables["rr_target"].insert(), [dict(id=1, name="stripe", spec=config_store.target_spec(target), updated_at=config_store.utcnow())])
        conn.execute(
            md.tables["rr_target_credential"].insert(),
            [
                dict(
                    id=1,
                    target_id=1,
                    name="live",
                    kind="bearer",
                    spec=config_store.credential_spec(target.credentials[0]),
                    secret_enc=keyring.encrypt(b"sk_live_x"),
                    secret_source="literal",
                    updated_at=config_store.utcnow(),
                )
            ],
        )
        conn.execute(md.tables["rr_proxy"].insert(), [dict(id=1, name="billing", spec=config_store.proxy_spec(proxy), updated_at=config_store.utcnow())])
        conn.execute(
            md.tables["rr_proxy_credential"].insert(),
            [
                dict(
                    id=1,
                    proxy_id=1,
                    name="agent-1",
                    auth="api_key",
                    spec=config_store.credential_spec(proxy.credentials[0]),
                    secret_digest=token_digest(hmac_key, "caller-1"),
                    secret_source="literal",
                    updated_at=config_store.utcnow(),
                )
            ],
        )


def dump(engine, tables, like: dict | None = None) -> dict[str, dict]:
    """Every row of `tables`; with `like` (an earlier dump), only the columns that dump had
    (later migrations may add columns: what matters is that nothing that was there is lost)."""
    md = MetaData()
    md.reflect(engine, only=list(tables))
    out = {}
    with engine.connect() as conn:
        for t in tables:
            table = md.tables[t]
            names = list(like[t]["columns"]) if like else [c.name for c in table.columns]
            rows = conn.execute(select(*(table.c[n] for n in names))).all()
            out[t] = {"columns": tuple(names), "rows": sorted((tuple(r) for r in rows), key=repr)}
    return out


def my_diffs(engine) -> list:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return [d for d in compare_metadata(ctx, SQLModel.metadata) if any(t in repr(d) for t in MINE)]


def test_upgrade_from_0001_keeps_every_row_and_the_configuration_still_loads(engine):
    keyring = Keyring([Fernet.generate_key()])
    cfg = alembic_config(engine)
    command.upgrade(cfg, "0001")
    insert_0001_rows(engine, keyring)
    config_tables = ["rr_config_state", "rr_target", "rr_target_credential", "rr_proxy", "rr_proxy_credential"]
    before = dump(engine, config_tables)

    command.upgrade(cfg, "0002")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO rr_counter (key, value, expires_at) VALUES ('usage:billing:agent-1:day:x', 7, 4102444800)"))
    counters = dump(engine, ["rr_counter"])

    before_rev, after_rev = migrate(engine)
    assert (before_rev, after_rev) == ("0002", head_revision())
    check_schema(engine)
    assert dump(engine, config_tables, like=before) == before
    assert dump(engine, ["rr_counter"], like=counters) == counters
    assert set(MINE) <= set(inspect(engine).get_table_names())
    assert all(not d["rows"] for d in dump(engine, MINE).values())

    snap = config_store.load_snapshot(engine, keyring)
    assert snap.version == 1 and set(snap.proxies) == {"billing"} and set(snap.targets) == {"stripe"}

    # the new tables work on the upgraded database
    sink = audit_store.DatabaseSink(engine)
    sink.write([audit.new_record(request_id="r-1", result="allow", status=200, proxy="billing")])
    sink.close()
    dataplanes.register(engine, "dp-1", listen="127.0.0.1:8081", config_version=snap.version)
    assert [r["request_id"] for r in audit_store.query(engine)] == ["r-1"]
    assert [p.id for p in dataplanes.list_planes(engine)] == ["dp-1"]


def test_migrated_schema_matches_the_models_and_downgrade_keeps_older_rows(engine):
    keyring = Keyring([Fernet.generate_key()])
    command.upgrade(alembic_config(engine), "0001")
    insert_0001_rows(engine, keyring)
    config_tables = ["rr_config_state", "rr_target", "rr_proxy"]
    before = dump(engine, config_tables)  # as 0001 made them
    migrate(engine)
    assert my_diffs(engine) == []

    command.downgrade(alembic_config(engine), "0002")
    assert current_revision(engine) == "0002"
    assert not set(MINE) & set(inspect(engine).get_table_names())
    assert dump(engine, config_tables, like=before) == before

    migrate(engine)  # and back up again
    assert current_revision(engine) == head_revision() and my_diffs(engine) == []


def test_models_register_on_the_metadata_alembic_compares():
    """env.py compares against SQLModel.metadata: importing the modules is enough to register the tables."""
    assert {"rr_audit", "rr_dataplane"} <= set(SQLModel.metadata.tables)
    assert audit_store.TABLE is SQLModel.metadata.tables["rr_audit"]
    assert dataplanes.TABLE is SQLModel.metadata.tables["rr_dataplane"]
