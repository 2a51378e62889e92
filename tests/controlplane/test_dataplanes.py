"""The data-plane registry: register, heartbeat with the enforced version, stale
marking, removal on a clean stop; a database outage never reaches the proxy."""

from __future__ import annotations

import asyncio
import os
import socket
from datetime import datetime, timedelta, timezone

from sqlalchemy import update

from rr_addon.store import dataplanes
from rr_addon.store.db import make_engine
from rr_addon.testing.wait import eventually_async


def set_heartbeat(engine, plane_id: str, when: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(update(dataplanes.TABLE).where(dataplanes.TABLE.c.id == plane_id).values(heartbeat_at=when))


def test_register_beat_list_unregister(engine):
    dataplanes.register(engine, "dp-1", listen="127.0.0.1:8081", config_version=3)
    dataplanes.register(engine, "dp-2", listen="127.0.0.1:8082", config_version=3)
    assert dataplanes.beat(engine, "dp-1", config_version=4, stats={"requests": 10, "audit_dropped": 0})
    planes = {p.id: p for p in dataplanes.list_planes(engine)}
    assert set(planes) == {"dp-1", "dp-2"}
    one = planes["dp-1"]
    assert (one.hostname, one.pid, one.listen, one.config_version, one.stats) == (socket.gethostname(), os.getpid(), "127.0.0.1:8081", 4, {"requests": 10, "audit_dropped": 0})
    assert one.age < 5 and not one.stale and one.heartbeat_at.tzinfo is not None
    assert planes["dp-2"].config_version == 3 and planes["dp-2"].stats == {}
    dataplanes.unregister(engine, "dp-1")
    assert [p.id for p in dataplanes.list_planes(engine)] == ["dp-2"]
    assert not dataplanes.beat(engine, "dp-1", config_version=4)  # gone: the caller registers again


def test_a_silent_data_plane_is_marked_stale_then_forgotten(engine):
    now = datetime.now(timezone.utc)
    for plane in ("fresh", "silent", "dead"):
        dataplanes.register(engine, plane, listen=None, config_version=1)
    set_heartbeat(engine, "silent", now - timedelta(seconds=20))
    set_heartbeat(engine, "dead", now - timedelta(days=2))
    planes = {p.id: p for p in dataplanes.list_planes(engine, now=now)}
    assert {k: p.stale for k, p in planes.items()} == {"fresh": False, "silent": True, "dead": True}
    assert 19 < planes["silent"].age < 21
    assert not {p.id: p for p in dataplanes.list_planes(engine, now=now, stale_after=30)}["silent"].stale
    assert dataplanes.forget_silent(engine, now=now) == 1
    assert {p.id for p in dataplanes.list_planes(engine)} == {"fresh", "silent"}


def test_the_heartbeat_loop_reports_the_version_and_leaves_on_stop(engine):
    version = [5]

    async def main():
        hb = dataplanes.Heartbeat(engine, listen="127.0.0.1:9", version=lambda: version[0], stats=lambda: {"requests": 1}, interval=30)
        hb.start()
        await eventually_async(lambda: hb.beats >= 1)
        (plane,) = dataplanes.list_planes(engine)
        assert (plane.id, plane.config_version, plane.stats, plane.listen) == (hb.id, 5, {"requests": 1}, "127.0.0.1:9")
        version[0] = 6
        hb.poke()  # a reload reports the new version at once, not at the next interval
        await eventually_async(lambda: hb.beats >= 2)
        assert dataplanes.list_planes(engine)[0].config_version == 6
        # someone removed our row (an operator, or a long partition): the next beat registers again
        dataplanes.unregister(engine, hb.id)
        hb.poke()
        await eventually_async(lambda: hb.beats >= 3)
        assert [p.id for p in dataplanes.list_planes(engine)] == [hb.id]
        await hb.stop()
        assert dataplanes.list_planes(engine) == []

    asyncio.run(main())


def test_a_database_outage_is_logged_once_and_never_raises(caplog):
    engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")

    async def main():
        hb = dataplanes.Heartbeat(engine, listen=None, version=lambda: 1, interval=0.05)
        attempts, real = [], hb.beat_once
        hb.beat_once = lambda: (attempts.append(1), real())  # noqa: E731  (counts tries, failing ones too)
        hb.start()
        await eventually_async(lambda: len(attempts) >= 3, what="three failed heartbeats")
        await hb.stop()
        assert hb.beats == 0

    asyncio.run(main())
    assert len([r for r in caplog.records if "heartbeat failed" in r.getMessage()]) == 1


def test_listen_address_from_a_running_master():
    class Server:
        def listen_addrs(self):
            return [("127.0.0.1", 8081), ("::1", 8081, 0, 0)]

    class Addons:
        def get(self, name):
            return Server() if name == "proxyserver" else None

    class Master:
        addons = Addons()

    assert dataplanes.listen_address(Master()) == "127.0.0.1:8081,[::1]:8081"
    assert dataplanes.listen_address(None) is None

