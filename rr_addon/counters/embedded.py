"""The default counter backend: counts in memory, persisted to the database.

The request path touches only dicts, under a lock that is uncontended but for
a few microseconds per flush: check-and-add is exact within one process.
A background thread flushes the increments as deltas every `flush_interval`
seconds in one transaction, then reloads every live counter, so a count
survives a restart, `rr usage reset` reaches a running proxy within one
interval, and processes sharing a database see each other's counts within one
interval (approximately: only Redis is exact across processes).

Loss window: increments become durable when the flush that carries them
commits. A SIGKILL loses at most the increments of the last
`flush_interval` plus the time one flush takes (default 250 ms + one commit);
while the database is unreachable, everything since the last good flush.
A clean `close()` flushes and loses nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Callable, Sequence

from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from rr_addon.policy.costs import LARGEST
from rr_addon.counters.base import BackendUnavailable, CheckResult, CounterOp
from rr_addon.store.tables import CounterRow
from rr_addon.store.db import sqlite_insert_many

logger = logging.getLogger(__name__)
TABLE = CounterRow.__table__  # type: ignore[attr-defined]


class EmbeddedBackend:
    def __init__(
        self,
        engine: Engine,
        *,
        flush_interval: float = 0.25,
        prune_interval: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self.flush_interval = flush_interval
        self._prune_interval = prune_interval
        self._clock = clock
        self._lock = threading.Lock()  # guards the three dicts
        self._flush_lock = threading.Lock()  # one flush or reset at a time
        self._counts: dict[str, int] = {}  # what the request path enforces
        self._pending: dict[str, int] = {}  # increments not yet in the database
        self._expiry: dict[str, int] = {}  # key -> window end (epoch seconds)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune = 0.0
        self.flush_failures = 0
        self._failing = False

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        """Load the live counters, then flush in the background. Raises
        BackendUnavailable if the database cannot be read (enforcing from zero
        would let a restart reset every quota)."""
        if not self.flush():
            raise BackendUnavailable("cannot load counters from the database")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="rr-counter-flush", daemon=True)
        self._thread.start()

    def close_sync(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        for _ in range(3):
            if self.flush():
                return
            time.sleep(0.1)
        logger.error("counters: final flush failed; %d counters not persisted", len(self._pending))

    async def close(self) -> None:
        await asyncio.to_thread(self.close_sync)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            self.flush()

    # -- the request path ---------------------------------------------------------

    def check_and_add_now(self, ops: Sequence[CounterOp]) -> CheckResult:
        """Atomic: no await, and the lock keeps the flusher's swap out. Keys within one call are distinct."""
        with self._lock:
            get = self._counts.get
            for op in ops:
                limit = op.limit
                if limit is not None and ((v := get(op.key, 0)) >= limit or v + op.amount > limit):
                    return _refused(ops, get)
            return CheckResult(True, self._add(ops))

    def add_now(self, ops: Sequence[CounterOp]) -> None:
        with self._lock:
            self._add(ops)

    def _add(self, ops: Sequence[CounterOp]) -> tuple[int, ...]:
        counts, pending, expiry = self._counts, self._pending, self._expiry
        get, pget = counts.get, pending.get
        values = []
        for op in ops:
            key, amount = op.key, op.amount
            value = get(key, 0)
            if amount:
                if value + amount > LARGEST:  # saturate, as Redis does: the database column is 64-bit
                    amount = LARGEST - value
                value += amount
                counts[key] = value
                pending[key] = pget(key, 0) + amount
                if key not in expiry:
                    expiry[key] = op.window.end
            values.append(value)
        return tuple(values)

    async def check_and_add(self, ops: Sequence[CounterOp]) -> CheckResult:
        return self.check_and_add_now(ops)

    async def add(self, ops: Sequence[CounterOp]) -> None:
        self.add_now(ops)

    # -- persistence --------------------------------------------------------------

    def flush(self) -> bool:
        """Write pending increments and reload live counters. False if the database failed
        (the increments stay pending and are retried)."""
        with self._flush_lock:
            with self._lock:
                pending, self._pending = self._pending, {}
                expiry = {k: self._expiry[k] for k in pending}
            now = int(self._clock())
            try:
                with self._engine.begin() as conn:
                    if pending:
                        _upsert(conn, pending, expiry)
                    if now - self._last_prune >= self._prune_interval:
                        conn.execute(delete(TABLE).where(TABLE.c.expires_at <= now))
                        self._last_prune = now
                    rows = _live_rows(conn, now)
            except Exception as e:  # whatever failed, the increments must not be dropped
                with self._lock:
                    for k, d in pending.items():
                        self._pending[k] = self._pending.get(k, 0) + d
                self.flush_failures += 1
                if not self._failing:
                    self._failing = True
                    logger.warning("counters: database flush failed, retrying every %.2fs: %s", self.flush_interval, _first_line(e))
                return False
            # What the database holds (ours and other processes') plus what happened meanwhile.
            counts = {k: v for k, v, _ in rows}
            expiries = {k: e for k, _, e in rows}
            with self._lock:
                for k, d in self._pending.items():
                    counts[k] = counts.get(k, 0) + d
                    expiries[k] = self._expiry[k]
                self._counts, self._expiry = counts, expiries
            if self._failing:
                self._failing = False
                logger.info("counters: database flush works again")
            return True

    # -- operators ------------------------------------------------------------------

    async def read(self, prefix: str) -> dict[str, int]:
        """Flush, then the live counters: what the database holds plus this process's pending."""
        if not await asyncio.to_thread(self.flush):
            raise BackendUnavailable("cannot read counters from the database")
        now = self._clock()
        with self._lock:
            return {k: v for k, v in self._counts.items() if k.startswith(prefix) and self._expiry.get(k, 0) > now}

    async def reset(self, prefix: str) -> int:
        return await asyncio.to_thread(self.reset_sync, prefix)

    def reset_sync(self, prefix: str) -> int:
        match = TABLE.c.key.startswith(prefix, autoescape=True)
        with self._flush_lock:  # no flush may write back what is being deleted
            with self._lock:
                gone = {k for k in self._counts if k.startswith(prefix)}
                for d in (self._counts, self._pending, self._expiry):
                    for k in [k for k in d if k.startswith(prefix)]:
                        del d[k]
            try:
                with self._engine.begin() as conn:
                    gone.update(conn.execute(select(TABLE.c.key).where(match)).scalars())
                    conn.execute(delete(TABLE).where(match))
            except SQLAlchemyError as e:
                raise BackendUnavailable(f"cannot reset counters: {_first_line(e)}") from None
        return len(gone)


def _refused(ops: Sequence[CounterOp], get: Callable[[str, int], int]) -> CheckResult:
    values = tuple(get(op.key, 0) for op in ops)
    refused = tuple(
        i for i, (op, v) in enumerate(zip(ops, values)) if op.limit is not None and (v >= op.limit or v + op.amount > op.limit)
    )
    return CheckResult(False, values, refused)


# On SQLite the upsert is a multi-row statement (`sqlite_insert_many`) and the live
# counters come back as one JSON row: fetching is one driver step per row, and each
# step handed the GIL back and forth with the event loop thread.
_SQLITE_UPSERT = ('INSERT INTO rr_counter ("key", value, expires_at)', 'ON CONFLICT ("key") DO UPDATE SET value = rr_counter.value + excluded.value')
_SQLITE_LIVE = 'SELECT json_group_array(json_array("key", value, expires_at)) FROM rr_counter WHERE expires_at > ?'
_json1 = True  # SQLite built without its JSON functions (before 3.38 they were optional): row by row


def _live_rows(conn: Connection, now: int) -> list:
    global _json1
    if conn.dialect.name == "sqlite" and _json1:
        try:
            (text,) = conn.exec_driver_sql(_SQLITE_LIVE, (now,)).one()
            return json.loads(text)
        except OperationalError as e:
            if "no such function" not in str(e):
                raise
            _json1 = False
    return list(conn.execute(select(TABLE.c.key, TABLE.c.value, TABLE.c.expires_at).where(TABLE.c.expires_at > now)).all())


def _upsert(conn: Connection, pending: dict[str, int], expiry: dict[str, int]) -> None:
    if conn.dialect.name == "sqlite":
        head, tail = _SQLITE_UPSERT
        sqlite_insert_many(conn, head, [(k, d, expiry[k]) for k, d in pending.items()], tail, largest=1024)
        return
    rows = [{"key": k, "value": d, "expires_at": expiry[k]} for k, d in pending.items()]
    if conn.dialect.name == "postgresql":
        ins = postgresql.insert(TABLE)
        conn.execute(ins.on_conflict_do_update(index_elements=[TABLE.c.key], set_={"value": TABLE.c.value + ins.excluded.value}), rows)
        return
    for row in rows:  # other databases: portable, one statement per counter
        res = conn.execute(update(TABLE).where(TABLE.c.key == row["key"]).values(value=TABLE.c.value + row["value"]))
        if res.rowcount == 0:
            conn.execute(insert(TABLE).values(**row))


def _first_line(e: Exception) -> str:
    text = str(getattr(e, "orig", None) or e).strip()
    return text.splitlines()[0] if text else type(e).__name__
