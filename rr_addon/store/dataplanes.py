"""The data-plane registry: every running `rr run` registers itself, beats
every few seconds with the configuration version it enforces, and removes
itself on a clean shutdown. `rr status` lists the rows; one whose heartbeat
is older than `stale_after` is marked stale (crashed, hung or partitioned),
and rows silent for a day are removed by the next data plane that beats.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine

from rr_addon.store.tables import DataPlaneRow

logger = logging.getLogger("rr")

HEARTBEAT_INTERVAL = 5.0
STALE_AFTER = 3 * HEARTBEAT_INTERVAL
FORGET_AFTER = timedelta(days=1)


TABLE = DataPlaneRow.__table__


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def new_id() -> str:
    """Short, unique, and readable next to the host name: '<host>-<pid>-<6 hex>'."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def listen_address(master: Any) -> str | None:
    """The addresses mitmproxy listens on ('127.0.0.1:8081'), from the running master."""
    server = master.addons.get("proxyserver") if master is not None else None
    if server is None:
        return None
    addrs = [f"[{a[0]}]:{a[1]}" if ":" in str(a[0]) else f"{a[0]}:{a[1]}" for a in server.listen_addrs()]
    return ",".join(addrs) or None


def _rr_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("rr-addon")
    except Exception:
        return None


# ---------------------------------------------------------------------------
# Writing (synchronous; the data plane runs these in a thread)


def register(engine: Engine, plane_id: str, *, listen: str | None, config_version: int | None, started_at: datetime | None = None) -> None:
    now = _now()
    row = dict(
        id=plane_id,
        hostname=socket.gethostname(),
        pid=os.getpid(),
        listen=listen,
        started_at=started_at or now,
        heartbeat_at=now,
        config_version=config_version,
        rr_version=_rr_version(),
        stats=None,
    )
    with engine.begin() as conn:
        conn.execute(delete(TABLE).where(TABLE.c.id == plane_id))
        conn.execute(TABLE.insert(), [row])


def beat(engine: Engine, plane_id: str, *, config_version: int | None, stats: dict | None = None) -> bool:
    """Record a heartbeat. False if the row is gone (someone forgot us): register again."""
    with engine.begin() as conn:
        n = conn.execute(
            update(TABLE).where(TABLE.c.id == plane_id).values(heartbeat_at=_now(), config_version=config_version, stats=stats)
        ).rowcount
    return n == 1


def unregister(engine: Engine, plane_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(delete(TABLE).where(TABLE.c.id == plane_id))


def forget_silent(engine: Engine, older_than: timedelta = FORGET_AFTER, *, now: datetime | None = None) -> int:
    with engine.begin() as conn:
        return conn.execute(delete(TABLE).where(TABLE.c.heartbeat_at < (now or _now()) - older_than)).rowcount


# ---------------------------------------------------------------------------
# Reading (`rr status`)


@dataclass(frozen=True)
class DataPlane:
    id: str
    hostname: str
    pid: int
    listen: str | None
    started_at: datetime
    heartbeat_at: datetime
    config_version: int | None
    rr_version: str | None
    stats: dict
    age: float  # seconds since the last heartbeat
    stale: bool

    def as_json(self) -> dict:
        return {
            "id": self.id,
            "hostname": self.hostname,
            "pid": self.pid,
            "listen": self.listen,
            "started_at": self.started_at.isoformat(timespec="seconds"),
            "heartbeat_at": self.heartbeat_at.isoformat(timespec="milliseconds"),
            "heartbeat_age_s": round(self.age, 1),
            "stale": self.stale,
            "config_version": self.config_version,
            "rr_version": self.rr_version,
            "stats": self.stats,
        }


def list_planes(engine: Engine, *, now: datetime | None = None, stale_after: float = STALE_AFTER) -> list[DataPlane]:
    now = now or _now()
    with engine.connect() as conn:
        rows = conn.execute(select(TABLE).order_by(TABLE.c.hostname, TABLE.c.started_at, TABLE.c.id)).all()
    out = []
    for r in rows:
        m = r._mapping
        beat_at = _utc(m["heartbeat_at"])
        age = max(0.0, (now - beat_at).total_seconds())
        out.append(
            DataPlane(
                id=m["id"],
                hostname=m["hostname"],
                pid=m["pid"],
                listen=m["listen"],
                started_at=_utc(m["started_at"]),
                heartbeat_at=beat_at,
                config_version=m["config_version"],
                rr_version=m["rr_version"],
                stats=m["stats"] or {},
                age=age,
                stale=age > stale_after,
            )
        )
    return out


# ---------------------------------------------------------------------------
# The heartbeat loop a data plane runs


class Heartbeat:
    """Register, beat every `interval` seconds (or at once after `poke()`), unregister on `stop()`.

        hb = Heartbeat(engine, listen="127.0.0.1:8081", version=lambda: addon.snapshot.version)
        hb.start()            # in `running()`, on mitmproxy's event loop
        hb.poke()             # after swapping in a new configuration: report it now
        await hb.stop()       # in `done()`

    Database errors are logged once and retried at the next beat; they never
    reach the proxy."""

    def __init__(
        self,
        engine: Engine,
        *,
        listen: str | None,
        version: Callable[[], int | None],
        stats: Callable[[], dict] | None = None,
        interval: float = HEARTBEAT_INTERVAL,
        plane_id: str | None = None,
    ):
        self.engine = engine
        self.listen = listen
        self.version = version
        self.stats = stats
        self.interval = interval
        self.id = plane_id or new_id()
        self.started_at = _now()
        self.beats = 0
        self._registered = False
        self._failing = False
        self._stopping = False
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="rr-heartbeat")

    def poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def stop(self, timeout: float = 5.0) -> None:
        task, self._task = self._task, None
        self._stopping = True
        if task is not None:
            self.poke()  # let a beat in progress finish, so it cannot re-register after we leave
            try:
                await asyncio.wait_for(task, timeout)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                pass
        if self._registered:
            try:
                await asyncio.to_thread(unregister, self.engine, self.id)
            except Exception as e:
                logger.warning("rr: could not remove data plane %s from the registry: %s", self.id, e)
            self._registered = False

    def beat_once(self) -> None:
        """One heartbeat (synchronous): register if needed, else update."""
        version = self.version()
        stats = self.stats() if self.stats is not None else None
        if not self._registered or not beat(self.engine, self.id, config_version=version, stats=stats):
            register(self.engine, self.id, listen=self.listen, config_version=version, started_at=self.started_at)
            if stats is not None:
                beat(self.engine, self.id, config_version=version, stats=stats)
            if not self._registered:
                forget_silent(self.engine)
            self._registered = True
        self.beats += 1

    async def _run(self) -> None:
        assert self._wake is not None
        while not self._stopping:
            try:
                await asyncio.to_thread(self.beat_once)
                if self._failing:
                    logger.info("rr: data plane heartbeat works again")
                self._failing = False
            except Exception as e:
                if not self._failing:
                    logger.warning("rr: data plane heartbeat failed (%s); retrying every %.0fs", e, self.interval)
                self._failing = True
            if self._stopping:
                return
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
