"""Configuration change notices: PostgreSQL LISTEN/NOTIFY, delivered at commit,
surviving a lost connection; a plain timeout (the version poll) elsewhere."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from rr_addon.store import notify
from rr_addon.store.db import make_engine, session
from rr_addon.testing.wait import eventually_async


@pytest.fixture
def pg_engine(pg_url):
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


async def started(engine) -> notify.ConfigChangeListener:
    listener = notify.ConfigChangeListener(engine.url)
    listener.start()
    assert await listener.wait_listening(5)
    assert await listener.wait(1)  # the (re)connect wake-up: changes may have been missed before
    return listener


def test_a_committed_change_wakes_the_listener_at_once(pg_engine):
    async def main():
        listener = await started(pg_engine)
        try:
            assert not await listener.wait(0.2)  # nothing changed
            with session(pg_engine) as s:  # what config_store.write does: notify inside the transaction
                assert notify.notify_change(s, 42)
                await asyncio.sleep(0.2)  # (a notice sent before the commit would have come by now)
                assert listener.notifications == 0  # not before the commit
                s.commit()
            assert await listener.wait(30)  # woken by the notice (the poll interval would say False)
            assert listener.notifications == 1 and listener.last_payload == "42"
        finally:
            await listener.aclose()

    asyncio.run(main())


def test_a_rolled_back_change_sends_nothing(pg_engine):
    async def main():
        listener = await started(pg_engine)
        try:
            with pg_engine.connect() as conn:  # a Connection works as well as a Session
                notify.notify_change(conn, 7)
                conn.rollback()
            assert not await listener.wait(0.5)
            assert listener.notifications == 0
        finally:
            await listener.aclose()

    asyncio.run(main())


def test_notices_coalesce_and_keep_coming(pg_engine):
    async def main():
        listener = await started(pg_engine)
        try:
            for v in (1, 2, 3):
                with pg_engine.begin() as conn:
                    notify.notify_change(conn, v)
            assert await listener.wait(2)
            await eventually_async(lambda: listener.notifications == 3, what="all three notices")
            assert listener.notifications == 3 and listener.last_payload == "3"
            await listener.wait(0.1)  # one wake-up or two: several notices coalesce
            assert not await listener.wait(0.2)  # and nothing more without a new notice
            with pg_engine.begin() as conn:
                notify.notify_change(conn)
            assert await listener.wait(2) and listener.last_payload == ""
        finally:
            await listener.aclose()

    asyncio.run(main())


def test_the_listener_reconnects_and_wakes_after_losing_its_connection(pg_engine):
    async def main():
        listener = await started(pg_engine)
        try:
            with pg_engine.begin() as conn:  # what a failover or a DBA's pg_terminate_backend does
                killed = conn.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%' AND datname = current_database()")
                ).all()
            assert killed == [(True,)]
            assert await listener.wait(5)  # woken by the reconnect: a change may have been missed
            assert listener.connects == 2
            with pg_engine.begin() as conn:
                notify.notify_change(conn, 9)
            assert await listener.wait(2) and listener.last_payload == "9"
        finally:
            await listener.aclose()

    asyncio.run(main())


def test_sqlite_has_no_notices_wait_is_the_poll_interval(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'rr.db'}")
    listener = notify.ConfigChangeListener(engine.url)
    assert not listener.supported

    async def main():
        listener.start()
        assert not await listener.wait(0.2)  # the interval passed: nothing woke it
        assert listener.notifications == 0
        await listener.aclose()

    asyncio.run(main())
    with engine.connect() as conn:
        assert notify.notify_change(conn, 1) is False
    engine.dispose()


def test_a_database_that_is_down_is_retried_quietly(caplog):
    listener = notify.ConfigChangeListener("postgresql+psycopg://nobody@127.0.0.1:1/none", reconnect_max=0.05)

    async def main():
        listener.start()
        assert not await listener.wait(0.5)
        await listener.aclose()

    asyncio.run(main())
    assert listener.connects == 0
    warnings = [r for r in caplog.records if "configuration change listener" in r.getMessage()]
    assert len(warnings) == 1  # logged once, not per attempt


@pytest.mark.parametrize(
    "url,expected",
    [
        ("postgresql+psycopg://u:p%40ss@db.example:5433/rr?sslmode=require", "postgresql://u:p%40ss@db.example:5433/rr?sslmode=require"),
        ("postgresql://u@localhost/rr", "postgresql://u@localhost/rr"),
    ],
)
def test_libpq_url(url, expected):
    assert notify.libpq_url(url) == expected
