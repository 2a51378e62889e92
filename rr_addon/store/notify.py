"""Telling running data planes that the configuration changed.

PostgreSQL: `rr apply` sends `NOTIFY rr_config, '<version>'` inside its
transaction (delivered at commit, never for a rolled-back apply), and each
data plane keeps one connection that LISTENs and wakes its reload loop at
once. Anything else (SQLite): no notification; the reload loop's version
poll is the mechanism. On PostgreSQL the poll stays as a safety net: a
notification sent while the listening connection was down is lost, so every
reconnect wakes the loop too.

    listener = ConfigChangeListener(engine.url)
    listener.start()                                   # on the event loop (`running()`)
    while True:
        await listener.wait(ctx.options.rr_reload_interval_ms / 1000)   # instead of asyncio.sleep(...)
        ...check the version, load, swap...
    await listener.aclose()                            # in `done()`
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url

logger = logging.getLogger("rr")

CHANNEL = "rr_config"


def _dialect(conn: Any) -> str:
    bind = conn.get_bind() if hasattr(conn, "get_bind") else conn  # Session or Connection
    return bind.dialect.name


def notify_change(conn: Any, version: int | None = None) -> bool:
    """Announce a configuration change on a SQLAlchemy Connection or Session.

    Call it inside the transaction that writes the change: PostgreSQL
    delivers the notification when that transaction commits (and drops it on
    rollback). Returns False (and does nothing) on engines without NOTIFY."""
    if _dialect(conn) != "postgresql":
        return False
    conn.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": "" if version is None else str(version)})
    return True


def libpq_url(url: str | URL) -> str:
    """A SQLAlchemy PostgreSQL URL as a libpq connection URI ('postgresql+psycopg://…' -> 'postgresql://…')."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class ConfigChangeListener:
    """Wakes the reload loop when the configuration may have changed."""

    def __init__(self, url: str | URL, *, channel: str = CHANNEL, reconnect_max: float = 5.0, connect_timeout: float = 5.0):
        parsed = make_url(url)
        self.supported = parsed.get_backend_name() == "postgresql"
        self._conninfo = libpq_url(parsed) if self.supported else ""
        self.channel = channel
        self.reconnect_max = reconnect_max
        self.connect_timeout = connect_timeout
        self.notifications = 0  # received
        self.connects = 0  # successful (re)connections
        self.last_payload: str | None = None
        self._event = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._conn: Any = None
        self._listening = asyncio.Event()

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    def start(self) -> None:
        """Start listening (PostgreSQL only; a no-op elsewhere). Call on the running loop."""
        if self.supported and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="rr-config-listener")

    async def wait_listening(self, timeout: float) -> bool:
        """True once the LISTEN is in place (tests; startup diagnostics)."""
        try:
            await asyncio.wait_for(self._listening.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds; True if woken by a change notice (or a
        reconnect, after which changes may have been missed), False on timeout."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        self._event.clear()
        return True

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        import psycopg

        backoff = 0.1
        failing = False
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._conninfo,
                    autocommit=True,
                    connect_timeout=self.connect_timeout,
                    # a silently dropped connection would otherwise wait for notifications forever
                    keepalives=1,
                    keepalives_idle=10,
                    keepalives_interval=5,
                    keepalives_count=3,
                )
                self._conn = conn
                try:
                    await conn.execute(f'LISTEN "{self.channel}"')
                    self.connects += 1
                    self._listening.set()
                    if failing or self.connects > 1:
                        logger.info("rr: listening for configuration changes again")
                    failing, backoff = False, 0.1
                    self._event.set()  # changes may have happened while we were not listening
                    async for note in conn.notifies():
                        self.notifications += 1
                        self.last_payload = note.payload
                        self._event.set()
                finally:
                    self._listening.clear()
                    self._conn = None
                    await conn.close()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if not failing:
                    logger.warning("rr: configuration change listener lost its connection (%s); polling until it is back", e)
                failing = True
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.reconnect_max)
