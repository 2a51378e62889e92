import asyncio
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid

import pytest
import redis

from rr_addon.policy.meters_schema import MeterSpec
from rr_addon.core import reasons
from rr_addon.core.quota import CounterOp, ProxyMeters, compile_meters
from rr_addon.policy.windows import Window
from rr_addon.counters import open_backend
from rr_addon.counters.base import BackendUnavailable, CounterBackend
from rr_addon.counters.redis_backend import CHECK_AND_ADD, RedisBackend

FAR = 4_102_444_800


def op(key, amount=1, limit=None, end=FAR):
    return CounterOp(key, amount, limit, Window("day", 0, end, "day:x"))


@pytest.fixture
def namespace(redis_url):
    ns = f"rr-test-{uuid.uuid4().hex[:10]}:"
    yield ns
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=ns + "*"))
    if keys:
        client.delete(*keys)
    client.close()


def run(coro):
    return asyncio.run(coro)


def test_open_backend_picks_redis(redis_url):
    backend = open_backend(redis_url=redis_url, engine=None)
    assert isinstance(backend, RedisBackend) and isinstance(backend, CounterBackend)
    run(backend.close())


def test_check_and_add_is_all_or_nothing(redis_url, namespace):
    async def main():
        b = RedisBackend(redis_url, namespace=namespace)
        ops = [op("usage"), op("a", limit=2), op("b", limit=5), op("check-only", amount=0, limit=1)]
        first = await b.check_and_add(ops)
        second = await b.check_and_add(ops)
        refused = await b.check_and_add(ops)
        await b.add([op("check-only", amount=1), op("nothing", amount=0)])
        last = await b.check_and_add([op("b", limit=5), op("check-only", amount=0, limit=1)])
        counts = await b.read("")
        await b.close()
        return first, second, refused, last, counts

    first, second, refused, last, counts = run(main())
    assert first.values == (1, 1, 1, 0) and second.values == (2, 2, 2, 0)
    assert (refused.admitted, refused.values, refused.refused) == (False, (2, 2, 2, 0), (1,))
    assert last.refused == (1,)
    assert counts == {"usage": 2, "a": 2, "b": 2, "check-only": 1}


def test_a_flushed_script_cache_costs_no_request(redis_url, namespace):
    """After a Redis restart (or SCRIPT FLUSH) the scripts are unknown to it: the next call loads them again and counts once."""

    async def main():
        b = RedisBackend(redis_url, namespace=namespace)
        await b.check_and_add([op("k", limit=10)])
        redis.Redis.from_url(redis_url).script_flush()
        again = await b.check_and_add([op("k", limit=10)])
        await b.add([op("k", amount=3)])
        counts = await b.read("")
        await b.close()
        return again, counts, b.failures

    again, counts, failures = run(main())
    assert again.admitted and again.values == (2,) and counts == {"k": 5} and failures == 0


def test_keys_expire_at_the_window_end(redis_url, namespace):
    end = int(time.time()) + 3600

    async def main():
        b = RedisBackend(redis_url, namespace=namespace)
        await b.check_and_add([op("k", limit=10, end=end), op("only-checked", amount=0, limit=10, end=end)])
        await b.add([op("v", amount=7, end=end + 1)])
        await b.close()

    run(main())
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.expiretime(namespace + "k") == end
        assert client.expiretime(namespace + "v") == end + 1
        assert client.exists(namespace + "only-checked") == 0
    finally:
        client.close()


def test_read_and_reset_by_prefix_within_the_namespace(redis_url, namespace):
    other = namespace + "other:"

    async def main():
        b = RedisBackend(redis_url, namespace=namespace)
        neighbour = RedisBackend(redis_url, namespace=other)
        await b.add([op("usage:p:c:day:x", 2), op("usage:p:d:day:x", 3), op("meter:p:m:-:day:x", 4), op("usage:p*:c:day:x", 5)])
        await neighbour.add([op("usage:p:c:day:x", 9)])
        read = await b.read("usage:p:")
        glob_is_literal = await b.read("usage:p*")
        deleted = await b.reset("usage:p:")
        after = await b.read("")
        theirs = await neighbour.read("")
        await b.close(), await neighbour.close()
        return read, glob_is_literal, deleted, after, theirs

    read, glob_is_literal, deleted, after, theirs = run(main())
    assert read == {"usage:p:c:day:x": 2, "usage:p:d:day:x": 3}
    assert glob_is_literal == {"usage:p*:c:day:x": 5}
    assert deleted == 2
    assert after == {"meter:p:m:-:day:x": 4, "usage:p*:c:day:x": 5, "other:usage:p:c:day:x": 9}
    assert theirs == {"usage:p:c:day:x": 9}


CLIENTS = r"""
import asyncio, sys, time
from rr_addon.policy.meters_schema import MeterSpec
from rr_addon.core.quota import ProxyMeters, compile_meters
from rr_addon.counters.redis_backend import RedisBackend

url, ns, now, start_at = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
specs = [
    MeterSpec(name="requests", limits={"hour": 10**6, "month": 50}),
    MeterSpec(name="mine", per="credential", limits={"day": 10**6}),
]
meters = ProxyMeters("p", compile_meters(specs))

async def client(backend, i):
    admitted = 0
    for _ in range(40):
        plan = meters.plan(f"c{i}", None, now)
        admitted += plan.verdict(await backend.check_and_add(plan.ops)).admitted
    return admitted

async def main():
    backend = RedisBackend(url, namespace=ns)
    await backend.read("warm-up")  # connect before the start line
    while time.time() < start_at:
        await asyncio.sleep(0.001)
    admitted = await asyncio.gather(*(client(backend, i) for i in range(4)))
    await backend.close()
    print(sum(admitted))

asyncio.run(main())
"""


def test_two_processes_of_four_clients_admit_exactly_the_limit(redis_url, namespace):
    now = time.time()
    start_at = now + 1.5
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    procs = [
        subprocess.Popen([sys.executable, "-c", CLIENTS, redis_url, namespace, str(now), str(start_at)], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    admitted = [int(o) for o in outputs]
    assert sum(admitted) == 50  # 320 attempts, 8 concurrent clients in 2 processes
    plan = ProxyMeters("p", compile_meters([MeterSpec(name="requests")])).plan("c0", None, now)
    month_key = next(op.key for op in plan.ops if op.key.startswith("meter:") and op.window.kind == "month")

    async def read():
        b = RedisBackend(redis_url, namespace=namespace)
        counts = await b.read("")
        await b.close()
        return counts

    counts = run(read())
    assert counts[month_key] == 50
    assert sum(v for k, v in counts.items() if k.startswith("usage:") and ":month:" in k) == 50


# --------------------------------------------------------------------------
# A Redis of our own, to stop and start.


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnRedis:
    def __init__(self, tmp_path):
        self.port = _free_port()
        self.dir = tmp_path
        self.proc = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        client.close()

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def client(self):
        return redis.Redis(port=self.port)


@pytest.fixture
def own_redis(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def test_outage_applies_the_meters_policy_and_recovers_by_itself(own_redis, caplog):
    caplog.set_level(logging.INFO, logger="rr_addon.counters.redis_backend")
    deny = ProxyMeters("p", compile_meters([MeterSpec(name="d", limits={"minute": 100})]))
    allow = ProxyMeters("p", compile_meters([MeterSpec(name="a", limits={"minute": 100}, on_backend_error="allow")]))

    async def decide(backend, meters):
        plan = meters.plan("c", None, time.time())
        try:
            return plan.verdict(await backend.check_and_add(plan.ops))
        except BackendUnavailable:
            return plan.on_backend_error()

    async def main():
        b = RedisBackend(own_redis.url, cooldown=0.2)
        assert (await decide(b, deny)).admitted and not (await decide(b, deny)).degraded
        own_redis.stop()
        t0 = time.monotonic()
        down = await decide(b, deny)
        first_failure = time.monotonic() - t0
        t0 = time.monotonic()
        allowed = await decide(b, allow)
        fast_failure = time.monotonic() - t0
        assert not b.available and b.failures == 2
        own_redis.start()  # an empty Redis: no counts, no cached script
        deadline = time.monotonic() + 5
        while (back := await decide(b, deny)).degraded and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await b.close()
        return down, allowed, back, first_failure, fast_failure, b.available

    down, allowed, back, first_failure, fast_failure, available = run(main())
    assert (down.admitted, down.reason, down.degraded) == (False, reasons.METER_BACKEND_DENY, True)
    assert allowed.admitted and allowed.degraded
    assert first_failure < 1.0 and fast_failure < 0.05  # no latency piles up while Redis is away
    assert back.admitted and not back.degraded and available
    messages = [r.getMessage() for r in caplog.records]
    assert sum("redis unavailable" in m for m in messages) == 1 and "counters: redis available again" in messages
    client = own_redis.client()
    assert client.script_exists(RedisBackend("redis://unused")._check.sha) == [True]  # reloaded after NOSCRIPT
    client.close()


def test_script_flush_falls_back_to_eval(own_redis):
    async def main():
        b = RedisBackend(own_redis.url)
        await b.check_and_add([op("k", limit=5)])
        client = own_redis.client()
        client.script_flush()
        assert client.script_exists(b._check.sha) == [False]
        result = await b.check_and_add([op("k", limit=5)])
        exists = client.script_exists(b._check.sha)
        client.close()
        await b.close()
        return result, exists

    result, exists = run(main())
    assert result.values == (2,) and exists == [True]
    assert "redis.call('EXPIREAT'" in CHECK_AND_ADD


def test_a_restart_between_requests_costs_no_failed_request(own_redis):
    async def main():
        b = RedisBackend(own_redis.url)
        await asyncio.gather(*(b.check_and_add([op("k")]) for _ in range(5)))  # several pooled connections
        own_redis.stop()
        own_redis.start()
        results = [await b.check_and_add([op("k")]) for _ in range(5)]  # each stale connection is replaced
        await b.close()
        return results, b.failures

    results, failures = run(main())
    assert [r.values for r in results] == [(1,), (2,), (3,), (4,), (5,)] and failures == 0


def test_concurrent_reservations_never_overrun_and_settle_exactly(redis_url, namespace):
    """200 reservations of 7 raced by 4 clients against a limit of 100: exactly 14 fit,
    and settling each to 5 leaves 70 (signed adds through the ADD script)."""
    from rr_addon.core.quota import Measurement
    from rr_addon.core.rules import RuleRequest

    spec = MeterSpec(name="tokens", type="response_value", response_value={"json_path": "$.n"}, reserve={"json_path": "$.max_tokens", "default": 1}, limits={"day": 100})
    pm = ProxyMeters("p", compile_meters([spec]))
    now = time.time()

    async def main():
        backends = [RedisBackend(redis_url, namespace=namespace) for _ in range(4)]

        async def client(b):  # one connection's requests one after another; the four clients interleave
            mine = []
            for _ in range(50):
                plan = pm.plan("c", RuleRequest("POST", "/", body_json={"max_tokens": 7}), now)
                if plan.verdict(await b.check_and_add(plan.ops)).admitted:
                    mine.append(plan)
            return mine

        plans = [p for mine in await asyncio.gather(*(client(b) for b in backends)) for p in mine]
        peak = await backends[0].read("meter:")

        async def settle(b, mine):
            for p in mine:
                await b.add(p.settle(Measurement({"tokens": 5}, {})))

        await asyncio.gather(*(settle(backends[i], plans[i::4]) for i in range(4)))
        final = await backends[0].read("meter:")
        for b in backends:
            await b.close()
        return len(plans), peak, final

    admitted, peak, final = run(main())
    day = next(k for k in peak if ":day:" in k)
    assert admitted == 14 and peak[day] == 98
    assert final[day] == 70


def test_counters_saturate_at_2_pow_53_instead_of_failing(redis_url, namespace):
    """INCRBY past 2**63 is an error (every later call on the key would fail): counters stop at 2**53."""

    async def main():
        b = RedisBackend(redis_url, namespace=namespace)
        await b.add([op("k", amount=2**62)])
        await b.add([op("k", amount=2**62)])
        admitted = await b.check_and_add([op("k", amount=2**53), op("u")])
        await b.add([op("k", amount=-10)])
        counts = await b.read("")
        await b.close()
        return admitted, counts

    admitted, counts = run(main())
    assert admitted.values == (2**53, 1)
    assert counts == {"k": 2**53 - 10, "u": 1}
