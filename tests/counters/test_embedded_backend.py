import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import text

from rr_addon.policy.meters_schema import MeterSpec
from rr_addon.core.quota import CounterOp, ProxyMeters, compile_meters
from rr_addon.policy.windows import Window
from rr_addon.counters import open_backend
from rr_addon.counters.base import BackendUnavailable, SyncCounterBackend
from rr_addon.counters.embedded import EmbeddedBackend
from rr_addon.store.tables import CounterRow
from rr_addon.store.db import make_engine, migrate

FAR = 4_102_444_800  # 2100-01-01: a window that outlives the test


def op(key, amount=1, limit=None, end=FAR):
    return CounterOp(key, amount, limit, Window("day", 0, end, "day:x"))


@pytest.fixture
def db_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'rr.db'}"
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    return url


@pytest.fixture
def engine(db_url):
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def stored(engine):
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT key, value FROM rr_counter")).all())


def test_is_a_sync_counter_backend(engine):
    backend = open_backend(redis_url=None, engine=engine)
    try:
        assert isinstance(backend, EmbeddedBackend) and isinstance(backend, SyncCounterBackend)
    finally:
        backend.close_sync()


def test_check_and_add_is_all_or_nothing(engine):
    b = EmbeddedBackend(engine)
    ops = [op("usage"), op("a", limit=2), op("b", limit=5), op("check-only", amount=0, limit=1)]
    assert b.check_and_add_now(ops).values == (1, 1, 1, 0)
    assert b.check_and_add_now(ops).values == (2, 2, 2, 0)
    refused = b.check_and_add_now(ops)
    assert (refused.admitted, refused.values, refused.refused) == (False, (2, 2, 2, 0), (1,))
    assert asyncio.run(b.read("")) == {"usage": 2, "a": 2, "b": 2}
    b.add_now([op("check-only", amount=1)])
    assert b.check_and_add_now([op("b", limit=5), op("check-only", amount=0, limit=1)]).refused == (1,)


def test_real_plan_refused_by_one_window_counts_nothing(engine):
    specs = [
        MeterSpec(name="a", limits={"minute": 100, "hour": 2}),
        MeterSpec(name="b", per="credential", limits={"day": 100}),
        MeterSpec(name="tokens", type="response_value", response_value={"header": "x-t"}, limits={"month": 10}),
    ]
    pm = ProxyMeters("p", compile_meters(specs))
    b = EmbeddedBackend(engine)
    now = time.time()
    for _ in range(2):
        assert pm.plan("c", None, now).verdict(b.check_and_add_now(pm.plan("c", None, now).ops)).admitted
    before = dict(b._counts)
    plan = pm.plan("c", None, now)
    verdict = plan.verdict(b.check_and_add_now(plan.ops))
    assert not verdict.admitted and verdict.exhausted == (("a", "hour"),)
    assert b._counts == before and b._pending == before  # nothing anywhere, usage included


def test_clean_close_loses_nothing_and_restart_loads(engine):
    b = EmbeddedBackend(engine, flush_interval=60)  # no background flush: close() must do it
    b.start()
    for _ in range(1234):
        b.check_and_add_now([op("k", limit=5000), op("usage:p:c:day:x")])
    asyncio.run(b.close())
    assert stored(engine) == {"k": 1234, "usage:p:c:day:x": 1234}
    again = EmbeddedBackend(engine)
    again.start()
    try:
        assert again.check_and_add_now([op("k", limit=5000)]).values == (1235,)
        assert asyncio.run(again.read("usage:")) == {"usage:p:c:day:x": 1234}
    finally:
        again.close_sync()


@pytest.mark.parametrize("json1", [True, False], ids=["json-row", "sqlite-without-json-functions"])
def test_counters_reload_with_or_without_sqlite_json_functions(engine, monkeypatch, json1):
    """The flush reads live counters back as one JSON row; an SQLite built without
    its JSON functions reads them row by row instead."""
    from rr_addon.counters import embedded

    monkeypatch.setattr(embedded, "_json1", True)
    if not json1:
        monkeypatch.setattr(embedded, "_SQLITE_LIVE", "SELECT no_such_json_function(?)")
    b = EmbeddedBackend(engine, flush_interval=60)
    b.start()
    b.check_and_add_now([op(f"k{i}", amount=i + 1) for i in range(300)] + [op("gone", end=1)])
    b.close_sync()
    again = EmbeddedBackend(engine, flush_interval=60)
    again.start()
    try:
        assert again.check_and_add_now([op("k299"), op("k0")]).values == (301, 2)
        assert embedded._json1 is json1
    finally:
        again.close_sync()


def test_background_flush_persists_within_an_interval(engine):
    b = EmbeddedBackend(engine, flush_interval=0.05)
    b.start()
    try:
        b.check_and_add_now([op("k")] * 1)
        deadline = time.monotonic() + 2
        while stored(engine).get("k") != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stored(engine) == {"k": 1}
    finally:
        b.close_sync()


CHILD = r"""
import sys, time
from rr_addon.core.quota import CounterOp
from rr_addon.policy.windows import Window
from rr_addon.counters.embedded import EmbeddedBackend
from rr_addon.store.db import make_engine

url, interval, mode = sys.argv[1], float(sys.argv[2]), sys.argv[3]
b = EmbeddedBackend(make_engine(url), flush_interval=interval)
n = 0  # increments counted so far
durable = 0  # increments a committed flush carried (at least): they must survive a SIGKILL
_flush = b.flush
def flush():
    global durable
    before = n  # the flush takes every increment counted so far (and maybe a few more)
    ok = _flush()
    if ok:
        durable = before
    return ok
b.flush = flush
b.start()
ops = [CounterOp("k", 1, None, Window("day", 0, 4102444800, "day:x"))]
for _ in range(1000):
    b.check_and_add_now(ops)
    n += 1
if mode == "close":
    b.close_sync()
    print("closed", flush=True)
    sys.exit(0)
while True:  # count until killed, saying how far and how much of it is durable
    b.check_and_add_now(ops)
    n += 1
    if n % 10 == 0:
        print(n, durable, b.flush_failures, flush=True)
    time.sleep(0.0005)
"""


def _child(db_url, interval, mode):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, db_url, str(interval), mode], stdout=subprocess.PIPE, text=True, env=env
    )


def test_sigkill_loses_only_what_no_flush_has_committed(db_url, engine):
    """What a committed flush carried survives a SIGKILL; nothing is counted twice.
    (That flushes come every interval is test_background_flush_persists_within_an_interval;
    here the child waits for evidence instead, so a slow disk cannot fail the test.)"""
    child = _child(db_url, 0.1, "kill")
    progress: list[tuple[int, int, int]] = []  # (counted, durable, failed flushes)
    try:
        deadline = time.monotonic() + 60
        while not progress or progress[-1][1] < 2000:  # two flushes after the first 1,000 at least
            assert time.monotonic() < deadline, f"no flush committed past 2,000 increments: {progress[-1:]}"
            progress.append(tuple(map(int, child.stdout.readline().split())))
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(10)
    with child.stdout:  # through the buffered reader: communicate() would skip what readline() buffered
        progress += [tuple(map(int, line.split())) for line in child.stdout.read().splitlines()]
    counted = EmbeddedBackend(engine)
    counted.start()
    value = counted.check_and_add_now([op("k", amount=0)]).values[0]
    counted.close_sync()
    counted_last, durable_last, failures = progress[-1]
    assert failures == 0
    assert durable_last <= value <= counted_last + 9  # +9: the child counts up to 9 past its last line


def test_clean_exit_of_a_process_keeps_every_count(db_url, engine):
    child = _child(db_url, 60, "close")
    out, _ = child.communicate(timeout=30)
    assert out.split() == ["closed"] and child.returncode == 0
    assert stored(engine) == {"k": 1000}


def test_expired_windows_are_pruned(engine):
    clock = [1_000_000.0]
    b = EmbeddedBackend(engine, prune_interval=0, clock=lambda: clock[0])
    b.check_and_add_now([op("old", end=1_000_010), op("new", end=1_000_100)])
    assert b.flush() and stored(engine) == {"old": 1, "new": 1}
    clock[0] = 1_000_010.0
    assert b.flush() and stored(engine) == {"new": 1}
    assert b._counts == {"new": 1} and asyncio.run(EmbeddedBackend(engine, clock=lambda: clock[0]).read("")) == {"new": 1}


def test_database_outage_keeps_increments_pending_until_it_returns(engine, caplog):
    b = EmbeddedBackend(engine)
    b.check_and_add_now([op("k")])
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE rr_counter"))
    b.check_and_add_now([op("k")])
    assert not b.flush() and not b.flush()
    assert b.flush_failures == 2 and b._pending == {"k": 2}
    assert sum("database flush failed" in r.getMessage() for r in caplog.records) == 1  # once per outage
    assert b.check_and_add_now([op("k", limit=3)]).values == (3,)  # still enforcing from memory
    CounterRow.__table__.create(engine)
    assert b.flush() and stored(engine) == {"k": 3}


def test_start_refuses_an_unreadable_database(engine):
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE rr_counter"))
    with pytest.raises(BackendUnavailable, match="cannot load counters"):
        EmbeddedBackend(engine).start()


def test_processes_sharing_a_database_add_up_and_see_each_other(engine):
    a, b = EmbeddedBackend(engine), EmbeddedBackend(engine)
    a.start(), b.start()
    try:
        a.add_now([op("k", amount=3)])
        b.add_now([op("k", amount=4)])
        assert a.flush() and b.flush() and a.flush()
        assert stored(engine) == {"k": 7}
        assert a.check_and_add_now([op("k", amount=0)]).values == (7,)
    finally:
        a.close_sync(), b.close_sync()


def test_reset_from_another_process_reaches_a_running_backend(engine):
    running = EmbeddedBackend(engine)
    running.start()
    try:
        running.add_now([op("usage:p:c:day:x", amount=5), op("usage:p:d:day:x", amount=5), op("meter:p:m:-:day:x", amount=5)])
        assert running.flush()
        cli = EmbeddedBackend(engine)  # `rr usage reset` is a separate process, never started
        assert asyncio.run(cli.read("usage:p:")) == {"usage:p:c:day:x": 5, "usage:p:d:day:x": 5}
        assert asyncio.run(cli.reset("usage:p:c:")) == 1
        running.add_now([op("usage:p:c:day:x")])  # counted meanwhile, after the reset
        assert running.flush()
        assert asyncio.run(running.read("")) == {"usage:p:c:day:x": 1, "usage:p:d:day:x": 5, "meter:p:m:-:day:x": 5}
        assert asyncio.run(running.reset("usage:")) == 2
        assert asyncio.run(running.read("")) == {"meter:p:m:-:day:x": 5} == stored(engine)
    finally:
        running.close_sync()


def test_reset_prefix_is_literal(engine):
    b = EmbeddedBackend(engine)
    b.add_now([op("usage:a_b:c"), op("usage:aXb:c"), op("usage:a%:c")])
    assert b.flush()
    assert asyncio.run(b.reset("usage:a_")) == 1
    assert asyncio.run(b.reset("usage:a%")) == 1
    assert stored(engine) == {"usage:aXb:c": 1}


def test_reservations_settle_with_signed_adds_and_persist(engine):
    """A reservation counted at admission, settled down (and up) by signed adds: the
    counter ends as the measured values, in memory and in the database."""
    from rr_addon.core.quota import Measurement
    from rr_addon.core.rules import RuleRequest

    spec = MeterSpec(name="tokens", type="response_value", response_value={"json_path": "$.n"}, reserve={"json_path": "$.max_tokens", "default": 1}, limits={"day": 250})
    pm = ProxyMeters("p", compile_meters([spec]))
    b = EmbeddedBackend(engine, flush_interval=60)
    b.start()
    now = time.time()
    plans = [pm.plan("c", RuleRequest("POST", "/", body_json={"max_tokens": 100}), now) for _ in range(3)]
    admitted = [p.verdict(b.check_and_add_now(p.ops)).admitted for p in plans]
    assert admitted == [True, True, False]  # 100 + 100 fit 250; a third 100 would not
    day = next(op.key for op in plans[0].ops if op.window.kind == "day" and op.meter)
    assert b._counts[day] == 200
    b.add_now(plans[0].settle(Measurement({"tokens": 30}, {})))
    b.add_now(plans[1].release())
    assert b._counts[day] == 30
    asyncio.run(b.close())
    assert stored(engine)[day] == 30


def test_counters_saturate_at_2_pow_53_and_still_persist(engine):
    """A giant add (a hostile upstream's usage) would overflow the BIGINT column, and every
    later flush with it: the counter stops at 2**53, like Redis."""
    b = EmbeddedBackend(engine, flush_interval=60)
    b.start()
    b.add_now([op("k", amount=2**62), op("other")])
    b.add_now([op("k", amount=2**62)])
    assert b.check_and_add_now([op("k", amount=2**53)]).values == (2**53,)
    b.add_now([op("k", amount=-10)])
    assert b.flush() and stored(engine) == {"k": 2**53 - 10, "other": 1}
    b.close_sync()
