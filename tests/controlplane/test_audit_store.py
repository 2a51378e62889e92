"""The audit table and its batched sink: nothing lost on a clean shutdown,
bounded and counted when the database is slow or down, retention, queries."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from rr_addon.audit import records as audit_records, writer as audit_writer
from rr_addon.store import audit_store
from rr_addon.store.audit_store import DatabaseSink, Filter
from rr_addon.store.db import make_engine, migrate

DOWN_URL = "postgresql+psycopg://nobody@127.0.0.1:1/none"  # connection refused: a database that is down


@pytest.fixture
def sqlite_engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'rr.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_engine(pg_url):
    engine = make_engine(pg_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request):
    return request.getfixturevalue("sqlite_engine" if request.param == "sqlite" else "pg_engine")


def rec(i: int = 0, **kw) -> dict:
    values = dict(
        request_id=f"req-{i}-{uuid.uuid4().hex[:8]}",
        result="allow",
        status=200,
        proxy="agent",
        credential="a",
        channel="connect",
        target="api",
        target_credential="live",
        method="GET",
        scheme="https",
        host="api.example.com",
        port=443,
        path=f"/v1/items/{i}",
        client="10.0.0.1",
        bytes_in=0,
        bytes_out=120,
        latency_ms=3.25,
        config_version=4,
    )
    values.update(kw)
    return audit_records.new_record(**values)


def aged(r: dict, days: float) -> dict:
    return {**r, "ts": (datetime.now(timezone.utc) - timedelta(days=days)).isoformat(timespec="milliseconds")}


def test_a_record_round_trips_with_every_field(engine):
    r = rec(1, code="access-denied", reason="a deny rule matched", scope="proxy", rule="no-deletes", result="deny", status=403)
    extra = {"decision_ms": 0.12, "meters": [{"meter": "requests", "window": "minute", "value": 3, "limit": 60}], "redactions": {"email": 2}}
    sink = DatabaseSink(engine, dataplane="dp-a")
    sink.write([{**r, **extra, "future_field": "kept"}])
    sink.close()
    (stored,) = audit_store.query(engine)
    assert isinstance(stored.pop("id"), int)
    assert stored == {**r, **extra, "dataplane": "dp-a", "future_field": "kept"}


def test_a_clean_shutdown_loses_nothing_and_writes_in_batches(engine, monkeypatch):
    calls = []
    real = audit_store.insert_rows
    monkeypatch.setattr(audit_store, "insert_rows", lambda e, rows: (calls.append(len(rows)), real(e, rows)))
    sink = DatabaseSink(engine, batch_size=500)
    writer = audit_writer.AuditWriter([sink])
    ids = []
    for i in range(3000):
        r = rec(i)
        ids.append(r["request_id"])
        writer.submit(r)
    writer.close()  # what the addon's done() does: flush the queue, then close the sinks
    assert writer.dropped == 0 and sink.written == 3000 and sink.pending == 0
    assert audit_store.count(engine) == 3000
    assert {r["request_id"] for r in audit_store.records(engine, ids[:10] + ids[-10:])} == set(ids[:10] + ids[-10:])
    assert sum(calls) == 3000 and max(calls) <= 500 and len(calls) < 3000 / 10  # batches, not rows


def test_a_record_stored_twice_is_kept_once(engine):
    r = rec(1)
    audit_store.insert_rows(engine, [audit_store.row_from_record(r)])
    audit_store.insert_rows(engine, [audit_store.row_from_record(r), audit_store.row_from_record(rec(2))])  # a retried batch
    assert audit_store.count(engine) == 2


def test_sqlite_rows_are_stored_byte_for_byte_as_sqlalchemy_stores_them(sqlite_engine, tmp_path):
    """The SQLite fast path (multi-row INSERT of plain tuples) against SQLAlchemy's own statement."""
    from sqlalchemy import text

    rows = [audit_store.row_from_record(rec(i, redactions={"email": i} if i % 2 else None, meters=["m"]), "dp") for i in range(600)]
    audit_store.insert_rows(sqlite_engine, rows + rows[:3])  # 3 chunks; repeats in one call are skipped
    reference = make_engine(f"sqlite:///{tmp_path / 'reference.db'}")
    migrate(reference)
    with reference.begin() as conn:
        conn.execute(audit_store._insert_statement(reference), rows)
    columns = ", ".join(f'"{c}"' for c in audit_store._SQLITE_COLUMNS)
    dump = lambda e: e.connect().execute(text(f"SELECT {columns} FROM rr_audit ORDER BY request_id")).all()  # noqa: E731
    fast, slow = dump(sqlite_engine), dump(reference)
    reference.dispose()
    assert len(fast) == 600 and fast == slow


def test_a_record_the_database_refuses_is_counted_and_the_rest_of_its_batch_stored(engine):
    sink = DatabaseSink(engine)
    sink.write([rec(1), rec(2, request_id=None), rec(3), {**rec(4), "ts": "not a time"}, rec(5)])
    sink.write([rec(6)])  # and the sink keeps working
    sink.close()
    assert (sink.written, sink.rejected) == (4, 2)
    assert audit_store.count(engine) == 4


def test_a_slow_database_keeps_memory_bounded_and_spills_the_overflow(sqlite_engine, monkeypatch, tmp_path):
    gate = threading.Event()
    real = audit_store.insert_rows

    def slow(engine, rows):
        gate.wait(10)
        real(engine, rows)

    monkeypatch.setattr(audit_store, "insert_rows", slow)
    spill = tmp_path / "audit-spill.jsonl"
    sink = DatabaseSink(sqlite_engine, max_buffer=100, batch_size=50, spill_path=spill)
    records = [rec(i) for i in range(1000)]
    for i in range(0, 1000, 50):
        sink.write(records[i : i + 50])  # returns at once: the database thread is stuck
        assert sink.pending <= 100 + 50  # the buffer, plus the batch in flight
    assert sink.spilled >= 850 and sink.dropped == 0
    gate.set()
    sink.close()
    assert sink.written + sink.spilled == 1000
    assert audit_store.count(sqlite_engine) == sink.written
    # the spilled records come back with `rr audit import`; nothing twice
    read, stored = audit_store.import_jsonl(sqlite_engine, spill)
    assert (read, stored) == (sink.spilled, sink.spilled)
    assert audit_store.count(sqlite_engine) == 1000
    assert audit_store.import_jsonl(sqlite_engine, spill) == (sink.spilled, 0)


def test_without_a_spill_file_the_overflow_is_dropped_and_counted(sqlite_engine, monkeypatch):
    gate = threading.Event()
    real = audit_store.insert_rows
    monkeypatch.setattr(audit_store, "insert_rows", lambda e, rows: (gate.wait(10), real(e, rows)))
    sink = DatabaseSink(sqlite_engine, max_buffer=10, batch_size=10)
    for i in range(0, 100, 10):
        sink.write([rec(j) for j in range(i, i + 10)])
    gate.set()
    sink.close()
    assert sink.dropped >= 70 and sink.written + sink.dropped == 100


def test_a_database_that_is_down_is_retried_then_spilled_at_shutdown(tmp_path, sqlite_engine):
    spill = tmp_path / "spill.jsonl"
    sink = DatabaseSink(make_engine(DOWN_URL), spill_path=spill, flush_timeout=0.5, max_backoff=0.1)
    records = [rec(i) for i in range(20)]
    sink.write(records)
    deadline = time.monotonic() + 5
    while sink.failures < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sink.failures >= 2 and sink.written == 0  # retried, still holding the records
    started = time.monotonic()
    sink.close()
    assert time.monotonic() - started < 3
    assert (sink.spilled, sink.dropped) == (20, 0)
    assert stat.S_IMODE(spill.stat().st_mode) == 0o600  # audit records: private, like the database
    lines = [json.loads(line) for line in spill.read_text().splitlines()]
    assert lines == records  # the JSON-lines sink's format: importable, readable by a SIEM
    assert audit_store.import_jsonl(sqlite_engine, spill) == (20, 20)


def test_prune_deletes_only_what_is_older_than_the_retention(engine):
    old = [aged(rec(i), 100) for i in range(5)]
    recent = [aged(rec(10 + i), 89) for i in range(3)]
    audit_store.insert_rows(engine, [audit_store.row_from_record(r) for r in old + recent])
    assert audit_store.prune(engine, chunk=2) == 5  # default retention: 90 days, in short transactions
    assert {r["request_id"] for r in audit_store.query(engine)} == {r["request_id"] for r in recent}
    assert audit_store.prune(engine, timedelta(days=30)) == 3


def test_query_filters_and_limit(engine):
    rows = [
        aged(rec(0, proxy="billing"), 2),
        aged(rec(1, proxy="billing", result="deny", status=403, code="access-denied"), 1),
        aged(rec(2, proxy="agent", result="deny", status=429, code="quota-exceeded"), 0.5),
        aged(rec(3, proxy="billing", result="would-deny", code="access-denied"), 0.01),
    ]
    audit_store.insert_rows(engine, [audit_store.row_from_record(r) for r in rows])

    def ids(flt=Filter(), limit=50):
        return [r["path"].rsplit("/", 1)[1] for r in audit_store.query(engine, flt, limit=limit)]

    assert ids() == ["0", "1", "2", "3"]  # oldest first
    assert ids(limit=2) == ["2", "3"]  # the latest two
    assert ids(Filter(proxy="billing")) == ["0", "1", "3"]
    assert ids(Filter(code="access-denied")) == ["1", "3"]
    assert ids(Filter(code="429")) == ["2"]
    assert ids(Filter(code="deny")) == ["1", "2"]
    assert ids(Filter(code="would-deny")) == ["3"]
    assert ids(Filter(since=audit_store.parse_since("1h"))) == ["3"]
    assert ids(Filter(proxy="billing", since=audit_store.parse_since("36h"))) == ["1", "3"]


def test_follow_yields_new_records_as_they_arrive(engine):
    audit_store.insert_rows(engine, [audit_store.row_from_record(rec(0))])  # before: not shown
    batches = [[rec(1), rec(2, proxy="other")], [], [rec(3)]]

    def tick(_):
        if batches:
            audit_store.insert_rows(engine, [audit_store.row_from_record(r) for r in batches.pop(0)])

    seen = audit_store.follow(engine, Filter(proxy="agent"), sleep=tick, stop=lambda: not batches and len(got) >= 2)
    got: list[dict] = []
    for r in seen:
        got.append(r)
    assert [r["path"] for r in got] == ["/v1/items/1", "/v1/items/3"]


def test_follow_sees_a_lower_id_committed_after_a_higher_one(pg_engine):
    """PostgreSQL hands out ids at insert time: a slow writer can commit an older id later."""
    slow = pg_engine.connect()
    tx = slow.begin()
    slow.execute(audit_store._insert_statement(pg_engine), [audit_store.row_from_record(rec(1))])  # takes an id, not committed
    audit_store.insert_rows(pg_engine, [audit_store.row_from_record(rec(2))])  # a higher id, committed
    steps = ["commit", "wait"]

    def tick(_):
        if steps and steps.pop(0) == "commit":
            tx.commit()

    got = []
    for r in audit_store.follow(pg_engine, after=0, sleep=tick, stop=lambda: not steps):
        got.append(r["path"])
    slow.close()
    assert got == ["/v1/items/2", "/v1/items/1"]


@pytest.mark.parametrize(
    "text,expected",
    [("90d", timedelta(days=90)), ("12h", timedelta(hours=12)), ("30m", timedelta(minutes=30)), ("45s", timedelta(seconds=45)), ("2w", timedelta(weeks=2)), ("1.5h", timedelta(minutes=90))],
)
def test_parse_duration(text, expected):
    assert audit_store.parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "90", "d", "-1d", "3 months"])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError, match="is not a duration"):
        audit_store.parse_duration(text)


def test_parse_since():
    now = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
    assert audit_store.parse_since("2h", now) == datetime(2026, 11, 30, 10, 0, tzinfo=timezone.utc)
    assert audit_store.parse_since("2026-11-28T10:00", now) == datetime(2026, 11, 28, 10, 0, tzinfo=timezone.utc)
    assert audit_store.parse_since("2026-11-28T10:00+01:00", now) == datetime(2026, 11, 28, 9, 0, tzinfo=timezone.utc)
    assert audit_store.parse_since("2026-11-28", now) == datetime(2026, 11, 28, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="neither a duration"):
        audit_store.parse_since("yesterday", now)


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 255, 256, 270, 1000, 5000])
def test_multi_row_statements_come_in_few_sizes(n):
    """SQLite caches one prepared statement per SQL text: batches of any size use five."""
    from rr_addon.store.db import fixed_chunks

    chunks = list(fixed_chunks(list(range(n))))
    assert [x for c in chunks for x in c] == list(range(n))
    assert {len(c) for c in chunks} <= {256, 64, 16, 4, 1}


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_the_audit_file_is_created_0600_whatever_the_umask(tmp_path, umask):
    path = tmp_path / "audit.jsonl"
    old = os.umask(umask)
    try:
        sink = audit_writer.JsonLinesSink(path)
    finally:
        os.umask(old)
    record = rec(1)
    sink.write([record])
    sink.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == record
