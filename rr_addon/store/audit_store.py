"""The audit trail in the database: the `rr_audit` table (`store.tables.AuditRow`), a batched sink for
`audit.writer.AuditWriter`, retention, and the queries behind `rr audit`.

Policy when the database is slow or down (bounded memory, everything counted):

1. The proxy hands records to `AuditWriter` (bounded queue; full -> dropped,
   counted in `AuditWriter.dropped`). Its thread passes batches to every sink.
2. `DatabaseSink.write` only appends to the sink's own bounded buffer
   (`max_buffer` records) and returns, so a slow database never holds up the
   other sinks (the JSON-lines file for the SIEM keeps flowing). The sink's
   thread inserts up to `batch_size` records per transaction, at most one
   transaction per `interval` (0.5 s) unless a full batch waits; a transient
   failure is retried with backoff (0.05 s doubling to 2 s) for as long as it
   takes, while new records wait in the buffer.
3. Buffer full: the incoming records are appended to the spill file (JSON
   lines, the `audit.writer.JsonLinesSink` format) if one is configured — counted in
   `spilled`, loaded back later with `import_jsonl` (`rr audit import`) —
   otherwise dropped, counted in `dropped`.
4. A record the database refuses for itself (not a connection problem) is
   skipped, counted in `rejected` and logged by request id.
5. `close()` flushes for up to `flush_timeout` seconds; what is left then is
   spilled (or counted in `dropped`) and logged. A clean shutdown with a
   working database loses nothing.

Inserts skip records whose `request_id` is already stored, so a retried
batch, or an import of a file whose records partly made it, never duplicates.
"""

from __future__ import annotations

import collections
import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from sqlalchemy import JSON, delete, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from rr_addon.audit.records import FIELDS
from rr_addon.audit.writer import open_private
from rr_addon.store.db import sqlite_insert_many
from rr_addon.store.tables import AuditRow

logger = logging.getLogger("rr.audit")

RETENTION = timedelta(days=90)

# Fields with a column of their own that `audit.records.FIELDS` may not have (yet): the
# sink stores them as soon as records carry them. Any other field a record
# carries that has no column is kept in `extra`.
EXTRA_FIELDS = (
    "decision_ms",  # time rr spent deciding (rules, meters), milliseconds
    "meters",  # the meters the request touched (names)
    "redactions",  # {"email": 2, "credit_card": 1}: what redaction replaced, by detector
    "dataplane",  # the id of the data plane that served the request
)
COLUMNS = tuple(FIELDS) + tuple(f for f in EXTRA_FIELDS if f not in FIELDS)


TABLE = AuditRow.__table__
_COLUMN_NAMES = frozenset(c.name for c in TABLE.columns) - {"id", "extra"}


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def row_from_record(record: dict, dataplane: str | None = None) -> dict:
    """The row for one audit record (a dict from `audit.records.new_record`)."""
    row = {k: record.get(k) for k in _COLUMN_NAMES}
    ts = record.get("ts")
    row["ts"] = _utc(datetime.fromisoformat(ts)) if isinstance(ts, str) else _utc(ts) if ts else datetime.now(timezone.utc)
    if not row.get("dataplane"):
        row["dataplane"] = dataplane
    extra = {k: v for k, v in record.items() if k not in _COLUMN_NAMES and k != "id"}
    row["extra"] = extra or None
    return row


def record_from_row(row: Any) -> dict:
    """A stored row as a record: the audit fields, then the extra ones, then `id`."""
    m = row._mapping if hasattr(row, "_mapping") else row
    rec = {k: m.get(k) for k in COLUMNS}
    rec["ts"] = _utc(m["ts"]).isoformat(timespec="milliseconds")
    rec.update(m["extra"] or {})
    rec["id"] = m["id"]
    return rec


def _insert_statement(engine: Engine):
    dialect = engine.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(TABLE).on_conflict_do_nothing(index_elements=["request_id"])
    if dialect == "sqlite":
        return sqlite.insert(TABLE).on_conflict_do_nothing(index_elements=["request_id"])
    return TABLE.insert()


def insert_rows(engine: Engine, rows: list[dict]) -> None:
    """Insert in one transaction; rows whose request_id is stored are skipped."""
    if not rows:
        return
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            _sqlite_insert(conn, rows)
        else:
            conn.execute(_insert_statement(engine), rows)


# On SQLite (the embedded default) rows go to the driver as plain tuples in
# multi-row statements (`sqlite_insert_many`): Core's per-row parameter processing
# cost as much as the insert, and executemany handed the GIL back per row.
_SQLITE_COLUMNS = tuple(c.name for c in TABLE.columns if c.name != "id")
_JSON_COLUMNS = frozenset(c.name for c in TABLE.columns if isinstance(c.type, JSON))
_SQLITE_HEAD = f"INSERT INTO rr_audit ({', '.join(f'"{c}"' for c in _SQLITE_COLUMNS)})"


def _sqlite_insert(conn: Any, rows: list[dict]) -> None:
    sqlite_insert_many(conn, _SQLITE_HEAD, [_sqlite_params(r) for r in rows], "ON CONFLICT (request_id) DO NOTHING")


def _sqlite_params(row: dict) -> tuple:
    """A row as SQLAlchemy binds it on SQLite: DateTime as naive UTC text, JSON
    columns through json.dumps (None as JSON null), so reads see no difference."""
    out = []
    for c in _SQLITE_COLUMNS:
        v = row.get(c)
        if c == "ts":
            v = _utc(v).strftime("%Y-%m-%d %H:%M:%S.%f")
        elif c in _JSON_COLUMNS:
            v = json.dumps(v)
        out.append(v)
    return tuple(out)


def _transient(e: Exception) -> bool:
    """A connection or availability problem (retry) rather than a bad row."""
    return isinstance(e, (OperationalError, InterfaceError)) or (isinstance(e, DBAPIError) and e.connection_invalidated)


class DatabaseSink:
    """`audit.writer.Sink` writing to `rr_audit` in batches from its own thread (see the module doc)."""

    def __init__(
        self,
        engine: Engine,
        *,
        dataplane: str | None = None,
        max_buffer: int = 20_000,
        batch_size: int = 1000,
        interval: float = 0.5,
        spill_path: Path | None = None,
        flush_timeout: float = 10.0,
        max_backoff: float = 2.0,
    ):
        self.engine = engine
        self.dataplane = dataplane
        self.max_buffer = max_buffer
        self.batch_size = batch_size
        self.interval = interval  # at most one transaction per interval unless a full batch waits
        self.spill_path = spill_path
        self.flush_timeout = flush_timeout
        self.max_backoff = max_backoff
        # counters (read by metrics and `rr status`; only ever increase)
        self.written = 0
        self.spilled = 0
        self.dropped = 0
        self.rejected = 0
        self.failures = 0  # failed insert attempts (each retried)
        self._buf: collections.deque[dict] = collections.deque()
        self._cv = threading.Condition()
        self._spill_lock = threading.Lock()
        self._closing = False
        self._deadline = float("inf")
        self._inflight: list[dict] = []
        self._down_since: float | None = None
        self._thread = threading.Thread(target=self._run, name="rr-audit-db", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Records accepted but not yet in the database."""
        return len(self._buf) + len(self._inflight)

    def write(self, records: list[dict]) -> None:
        with self._cv:
            room = self.max_buffer - len(self._buf)
            keep, overflow = (records, []) if room >= len(records) else (records[: max(room, 0)], records[max(room, 0) :])
            if self._closing:
                keep, overflow = [], records
            self._buf.extend(keep)
            self._cv.notify()
        if overflow:
            self._spill(overflow, "the audit database buffer is full")

    def close(self) -> None:
        """Flush what is buffered (up to `flush_timeout` s), spill or count the rest."""
        with self._cv:
            self._closing = True
            self._deadline = time.monotonic() + self.flush_timeout
            self._cv.notify()
        self._thread.join(self.flush_timeout + 1.0)
        if self._thread.is_alive():  # stuck in a database call: keep what we still hold
            with self._cv:
                left = list(self._buf)
                self._buf.clear()
            self._spill(left, "the audit database did not answer before shutdown")
            logger.error("rr audit: %d records were being written when rr stopped waiting; they may be lost", len(self._inflight))

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._buf and not self._closing:
                    self._cv.wait()
                if not self._buf:
                    return
                n = min(len(self._buf), self.batch_size)
                self._inflight = [self._buf.popleft() for _ in range(n)]
            try:
                self._store(self._inflight)
            except Exception:  # never let the thread die: the records it holds are lost, and counted
                self.dropped += len(self._inflight)
                logger.exception("rr audit: unexpected error writing %d records to the database; dropped", len(self._inflight))
            self._inflight = []
            # A commit costs ~0.5 ms whatever its size: gather records for `interval`
            # seconds rather than one transaction per AuditWriter hand-over (20 per second).
            with self._cv:
                self._cv.wait_for(lambda: self._closing or len(self._buf) >= self.batch_size, timeout=self.interval)

    def _store(self, batch: list[dict]) -> None:
        rows = []
        for r in batch:
            try:
                rows.append(row_from_record(r, self.dataplane))
            except (TypeError, ValueError, AttributeError) as e:
                self.rejected += 1
                logger.error("rr audit: cannot store the record of request %s: %s", r.get("request_id") if isinstance(r, dict) else "?", e)
        backoff = 0.05
        while True:
            try:
                insert_rows(self.engine, rows)
            except Exception as e:
                if not _transient(e):
                    self._one_by_one(rows)
                    return
                self.failures += 1
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    logger.warning("rr audit: cannot write to the database (%s); buffering, retrying", _first_line(e))
                if self._closing and time.monotonic() + backoff > self._deadline:
                    with self._cv:
                        left = batch + list(self._buf)
                        self._buf.clear()
                    self._spill(left, "the audit database is unavailable at shutdown")
                    return
                with self._cv:
                    self._cv.wait_for(lambda: self._closing and time.monotonic() > self._deadline, timeout=backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            self.written += len(rows)
            if self._down_since is not None:
                logger.info("rr audit: database writes resumed after %.1fs", time.monotonic() - self._down_since)
                self._down_since = None
            return

    def _one_by_one(self, rows: list[dict]) -> None:
        for row in rows:
            try:
                insert_rows(self.engine, [row])
                self.written += 1
            except Exception as e:
                self.rejected += 1
                logger.error("rr audit: the database refused the record of request %s: %s", row.get("request_id"), _first_line(e))

    def _spill(self, records: list[dict], why: str) -> None:
        if not records:
            return
        with self._spill_lock:  # both threads spill; the counters and the file stay consistent
            if self.spill_path is None:
                self.dropped += len(records)
                logger.error("rr audit: %s; %d records dropped (no spill file configured)", why, len(records))
                return
            try:
                with open_private(self.spill_path) as f:
                    f.write("".join(json.dumps(r, separators=(",", ":"), default=str) + "\n" for r in records))
                self.spilled += len(records)
                logger.warning("rr audit: %s; %d records spilled to %s (load with `rr audit import`)", why, len(records), self.spill_path)
            except OSError as e:
                self.dropped += len(records)
                logger.error("rr audit: %s and the spill file failed (%s); %d records dropped", why, e, len(records))


def _first_line(e: Exception) -> str:
    text = str(getattr(e, "orig", None) or e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# ---------------------------------------------------------------------------
# Retention and import


def prune(engine: Engine, older_than: timedelta = RETENTION, *, now: datetime | None = None, chunk: int = 10_000) -> int:
    """Delete records older than `older_than`, in short transactions. Returns how many."""
    cutoff = (now or datetime.now(timezone.utc)) - older_than
    total = 0
    while True:
        ids = select(TABLE.c.id).where(TABLE.c.ts < cutoff).order_by(TABLE.c.id).limit(chunk)
        with engine.begin() as conn:
            n = conn.execute(delete(TABLE).where(TABLE.c.id.in_(ids))).rowcount
        total += n
        if n < chunk:
            return total


def import_jsonl(engine: Engine, path: Path, *, batch_size: int = 1000) -> tuple[int, int]:
    """Load records from a JSON-lines file (a spill file or `rr_audit_file`).
    Returns (lines read, records newly stored); already stored request ids are skipped."""
    read = 0
    with engine.connect() as conn:
        before = conn.execute(select(func.count()).select_from(TABLE)).scalar_one()
    batch: list[dict] = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            batch.append(row_from_record(json.loads(line)))
            read += 1
            if len(batch) >= batch_size:
                insert_rows(engine, batch)
                batch = []
    insert_rows(engine, batch)
    with engine.connect() as conn:
        after = conn.execute(select(func.count()).select_from(TABLE)).scalar_one()
    return read, after - before


# ---------------------------------------------------------------------------
# Queries for `rr audit`

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
RESULTS = ("allow", "deny", "would-deny", "would-hold", "error")


def parse_duration(text: str) -> timedelta:
    """'90d', '12h', '30m', '45s', '2w' -> timedelta; ValueError otherwise."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a duration like 90d, 12h, 30m or 45s")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """A duration back from now ('15m', '2h', '7d') or an ISO date/time (UTC unless it says otherwise)."""
    try:
        return (now or datetime.now(timezone.utc)) - parse_duration(text)
    except ValueError:
        pass
    try:
        return _utc(datetime.fromisoformat(text.strip()))
    except ValueError:
        raise ValueError(f"{text!r} is neither a duration (15m, 2h, 7d) nor an ISO time (2026-11-28T10:00)") from None


@dataclass(frozen=True)
class Filter:
    proxy: str | None = None
    code: str | None = None  # an rr code, a status ("403") or a result ("deny")
    since: datetime | None = None

    def clauses(self) -> list:
        out = []
        if self.proxy:
            out.append(TABLE.c.proxy == self.proxy)
        if self.code:
            if self.code.isdigit():
                out.append(TABLE.c.status == int(self.code))
            elif self.code in RESULTS:
                out.append(TABLE.c.result == self.code)
            else:
                out.append(TABLE.c.code == self.code)
        if self.since is not None:
            out.append(TABLE.c.ts >= _utc(self.since))
        return out


def query(engine: Engine, flt: Filter = Filter(), *, limit: int = 50) -> list[dict]:
    """The latest `limit` matching records, oldest first."""
    stmt = select(TABLE).where(*flt.clauses()).order_by(TABLE.c.id.desc()).limit(limit)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return [record_from_row(r) for r in reversed(rows)]


def last_id(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.coalesce(func.max(TABLE.c.id), 0))).scalar_one()


def follow(
    engine: Engine,
    flt: Filter = Filter(),
    *,
    after: int | None = None,
    interval: float = 0.5,
    stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
    settle: float = 10.0,
) -> Iterator[dict]:
    """Yield records stored after id `after` (default: now) as they arrive, until `stop()`.

    On PostgreSQL ids are handed out before commit, so concurrent writers can
    commit a lower id after a higher one: ids skipped over are looked up
    again for `settle` seconds (they are rows another filter excludes, rolled
    back, or not yet committed)."""
    cursor = last_id(engine) if after is None else after
    if engine.dialect.name == "sqlite":
        settle = 0.0  # one writer at a time: ids commit in order
    holes: dict[int, float] = {}  # id -> monotonic time first missed
    while not stop():
        now = time.monotonic()
        for i in [i for i, t in holes.items() if now - t > settle]:
            del holes[i]
        where = TABLE.c.id > cursor
        if holes:
            where = or_(where, TABLE.c.id.in_(sorted(holes)))
        with engine.connect() as conn:
            rows = conn.execute(select(TABLE).where(where, *flt.clauses()).order_by(TABLE.c.id)).all()
        for r in rows:
            i = r._mapping["id"]
            if i > cursor:
                if settle:
                    holes.update(dict.fromkeys(range(max(cursor + 1, i - 10_000), i), now))
                cursor = i
            holes.pop(i, None)
            yield record_from_row(r)
        if len(holes) > 10_000:  # a sparse filter on a busy trail: forget the oldest
            for i in sorted(holes)[: len(holes) - 10_000]:
                del holes[i]
        sleep(interval)


def count(engine: Engine, flt: Filter = Filter()) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(TABLE).where(*flt.clauses())).scalar_one()


def records(engine: Engine, request_ids: Iterable[str]) -> list[dict]:
    """The records of these requests (tests, `rr audit` lookups)."""
    ids = list(request_ids)
    with engine.connect() as conn:
        rows = conn.execute(select(TABLE).where(TABLE.c.request_id.in_(ids)).order_by(TABLE.c.id)).all()
    return [record_from_row(r) for r in rows]
