"""Budgets that hold under concurrency (docs/budgets.md), through real `rr run`
data planes: a burst of streamed completions all in flight at once cannot
overrun a token budget (embedded counters, Redis, two data planes sharing
Redis), a reservation is settled to the measured value or released when
nothing came back, and a cost meter counts money from OpenAI- and
Anthropic-shaped usage and refuses a model it has no price for."""

from __future__ import annotations

import json
import ssl
import threading
import uuid
from decimal import Decimal

import httpx
import pytest

from rr_addon.policy.costs import Price, micro_cost
from rr_addon.testing.home import audit_record, prepare_home, rr_cli
from rr_addon.testing.proxy import ProxyProcess
from rr_addon.testing.wait import eventually
from tests.e2e.test_meters_refund import Silent

POLICY = """
targets:
  - name: llm
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials: [{{name: live, kind: bearer, secret: sk_budget_SECRET}}]
  - name: silent
    hosts: ["127.0.0.1:{silent}"]
    schemes: [http]
    allow_private_addresses: true
    credentials: [{{name: live, kind: bearer, secret: sk_budget_SECRET}}]
proxies:
  - name: {proxy}
    targets: [{{target: llm}}, {{target: silent}}]
    meters:
      - name: tokens
        type: response_value
        response_value: {{json_path: "$.usage.total_tokens"}}
        reserve: {{json_path: "$.max_tokens", default: 4096}}
        limits: {{day: {limit}, month: 5000000}}
        when: {{path: "^/(sse/openai|status/|usage/|x)"}}
      - name: spend
        type: cost
        cost:
          model: "$.model"
          prices:
            gpt-4o-mini: {{input: 0.00015, output: 0.0006}}
            claude-3-5-haiku: {{input: 0.0008, output: 0.004}}
          input: ["$.usage.prompt_tokens", "$.usage.input_tokens", "$.message.usage.input_tokens"]
          output: ["$.usage.completion_tokens", "$.usage.output_tokens"]
        reserve: {{json_path: "$.max_tokens", default: 1024}}
        limits: {{month: 0.01}}
        when: {{path: "^/(sse/anthropic|v1/)"}}
    credentials:
      - {{name: a, auth: api_key, secret: KEY_a}}
"""

LIMIT = 1000
HAIKU = Price(Decimal("0.0008"), Decimal("0.004"))
RESERVE = 100  # every request of the burst asks for max_tokens 100 and uses 10 + i % 50 <= 59


def home_for(tmp_path, upstream, silent, limit: int = LIMIT) -> tuple:
    proxy = f"budget-{uuid.uuid4().hex[:8]}"  # unique: this run's Redis counters only
    return prepare_home(tmp_path / proxy, POLICY.format(port=upstream.port, silent=silent.port, proxy=proxy, limit=limit)), proxy


def client(p: ProxyProcess, proxy: str, **kw) -> httpx.Client:
    return httpx.Client(proxy=p.url(proxy, "KEY_a"), verify=ssl.create_default_context(cafile=str(p.ca)), timeout=kw.pop("timeout", 60), **kw)


def usage(home, proxy: str, env: dict, meter: str = "tokens", window: str = "day") -> dict:
    rows = [json.loads(line) for line in rr_cli(home, "usage", "--proxy", proxy, "--json", env=env).output.splitlines()]
    return next(r for r in rows if r["meter"] == meter and r["window"] == window)


def settled(read, want):
    """`read()` once it equals `want` (counters of a finished request land within a flush),
    or what it reads when that never happens, for the caller's assertion to show."""
    try:
        eventually(lambda: read() == want, what=f"{want!r}")
    except TimeoutError:
        pass
    return read()


@pytest.fixture(scope="module")
def silent():
    s = Silent()
    yield s
    s.done.set()
    s.close()


def burst(planes: list[ProxyProcess], proxy: str, upstream, n: int, kind: str = "openai", body: bytes | None = None) -> tuple[list, list[int], tuple]:
    """Start `n` streamed completions spread over `planes`, and return once all are in
    flight at once: each was refused (429), or is streaming and its end is held by the
    upstream. Returns the statuses, the tokens each admitted request will have used once
    `finish` lets the streams end, and the handle for `finish`."""
    gate = uuid.uuid4().hex
    statuses: list[int | None] = [None] * n
    used: list[int] = []
    lock = threading.Lock()
    answered = threading.Barrier(n + 1, timeout=120)

    def one(i: int) -> None:
        completion = i % 50
        if kind == "openai":
            url = f"https://127.0.0.1:{upstream.port}/sse/openai?prompt=10&completion={completion}&gate={gate}"
            payload = json.dumps({"model": "gpt-4o-mini", "max_tokens": RESERVE, "stream": True}).encode()
        else:
            url = f"https://127.0.0.1:{upstream.port}/sse/anthropic?input=20&output={150 + completion}&gate={gate}"
            payload = body or b""
        with client(planes[i % len(planes)], proxy) as c:
            try:
                with c.stream("POST", url, content=payload, headers={"content-type": "application/json"}) as r:
                    statuses[i] = r.status_code
                    seen = b""
                    chunks = r.iter_raw()
                    if r.status_code == 200:
                        for chunk in chunks:  # in flight: its first event came through
                            seen += chunk
                            if b"Hel" in seen:
                                break
                    answered.wait()
                    for _ in chunks:
                        pass
                if r.status_code == 200:
                    with lock:
                        used.append(10 + completion if kind == "openai" else micro_cost(HAIKU, 20, 150 + completion))
            except threading.BrokenBarrierError:
                pass

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    answered.wait()  # every request is refused or streaming; none has ended
    return statuses, used, (gate, threads)


def finish(upstream, handle) -> None:
    gate, threads = handle
    upstream.gates.release(gate)
    for t in threads:
        t.join(60)
    assert upstream.gates.released_in_time[gate], "a stream ended before the whole burst was in flight"


@pytest.mark.parametrize("backend, planes", [("embedded", 1), ("redis", 1), ("redis", 2)])
def test_a_burst_of_concurrent_streams_cannot_overrun_the_token_budget(request, tmp_path, upstream, silent, pki, monkeypatch, backend, planes):
    monkeypatch.setattr(upstream.gates, "timeout", 120.0)  # the burst of 40 TLS handshakes on a busy machine
    env = {"RR_REDIS_URL": request.getfixturevalue("redis_url")} if backend == "redis" else {}
    home, proxy = home_for(tmp_path, upstream, silent)
    processes = [ProxyProcess(home, upstream_ca=pki.ca_cert, env=env, name=f"plane{i}") for i in range(planes)]
    try:
        for p in processes:
            p.start()
        statuses, used, handle = burst(processes, proxy, upstream, 40)
        try:
            # all 40 are decided and none has ended: the admitted ones hold their reservations
            assert sorted(statuses) == [200] * (LIMIT // RESERVE) + [429] * (40 - LIMIT // RESERVE)
            during = usage(home, proxy, env)
            assert during["used"] == (LIMIT // RESERVE) * RESERVE <= LIMIT
        finally:
            finish(upstream, handle)
        assert len(used) == LIMIT // RESERVE
        after = settled(lambda: usage(home, proxy, env)["used"], sum(used))
        assert after == sum(used) <= LIMIT  # each reservation replaced by what its stream measured
        assert usage(home, proxy, env)["unmeasured"] == 0
    finally:
        for p in processes:
            p.stop()
        if backend == "redis":
            rr_cli(home, "usage", "reset", "--proxy", proxy, "--yes", env=env)


@pytest.mark.parametrize("backend, planes", [("embedded", 1), ("redis", 2)])
def test_a_burst_of_concurrent_streams_cannot_overrun_the_money_budget(request, tmp_path, upstream, silent, pki, monkeypatch, backend, planes):
    """Anthropic-shaped streams priced per model: each reserves its body as input and
    max_tokens as output at claude-3-5-haiku's price; 0.01 USD holds 9 of them at once."""
    monkeypatch.setattr(upstream.gates, "timeout", 120.0)
    env = {"RR_REDIS_URL": request.getfixturevalue("redis_url")} if backend == "redis" else {}
    home, proxy = home_for(tmp_path, upstream, silent)
    body = json.dumps({"model": "claude-3-5-haiku", "max_tokens": 250, "stream": True}).encode()
    reservation = micro_cost(HAIKU, len(body), 250)
    fit = 10_000 // reservation
    assert fit == 9
    processes = [ProxyProcess(home, upstream_ca=pki.ca_cert, env=env, name=f"plane{i}") for i in range(planes)]
    spend = lambda: usage(home, proxy, env, "spend", "month")  # noqa: E731
    try:
        for p in processes:
            p.start()
        statuses, used, handle = burst(processes, proxy, upstream, 30, "anthropic", body)
        try:
            assert sorted(statuses) == [200] * fit + [429] * (30 - fit)
            assert spend()["used_micros"] == fit * reservation <= 10_000
        finally:
            finish(upstream, handle)
        after = settled(lambda: spend()["used_micros"], sum(used))
        assert after == sum(used) <= 10_000  # each reservation replaced by the stream's exact cost
        assert spend()["unmeasured"] == 0
    finally:
        for p in processes:
            p.stop()
        if backend == "redis":
            rr_cli(home, "usage", "reset", "--proxy", proxy, "--yes", env=env)


@pytest.mark.parametrize("backend", ["embedded", "redis"])
def test_reservations_are_settled_or_released_however_the_exchange_ends(request, tmp_path, upstream, silent, pki, backend):
    env = {"RR_REDIS_URL": request.getfixturevalue("redis_url")} if backend == "redis" else {}
    home, proxy = home_for(tmp_path, upstream, silent)
    body = {"model": "gpt-4o-mini", "max_tokens": 300}
    base = f"https://127.0.0.1:{upstream.port}"
    used = lambda: usage(home, proxy, env)["used"]  # noqa: E731
    try:
        with ProxyProcess(home, upstream_ca=pki.ca_cert, env=env, args=["--set", "rr_upstream_timeout=1"]) as p, client(p, proxy) as c:
            assert c.post(f"{base}/usage/42", json=body).status_code == 200
            assert settled(used, 42) == 42  # measured: the value replaces the reservation
            failed = c.post(f"{base}/status/500", json=body)
            assert failed.status_code == 500
            assert settled(used, 42) == 42  # an upstream 5xx without usage: released
            assert audit_record(home, failed.headers["rr-request-id"], proxy=proxy)["charged"] == {"tokens": 0}
            assert c.post(f"http://127.0.0.1:{silent.port}/x", json=body).status_code == 504
            assert settled(used, 42) == 42  # sent, never answered: released
            with client(p, proxy) as impatient:
                assert impatient.get(f"{base}/warm").status_code == 200  # the tunnel is up: the timeout below is the answer's
                with pytest.raises(httpx.ReadTimeout):  # the caller hangs up before any answer
                    impatient.post(f"{base}/usage/7?wait=5", json=body, timeout=httpx.Timeout(30, read=0.3))  # well before rr's own 1 s upstream timeout could answer
            assert settled(used, 42) == 42
            assert c.post(f"{base}/x", json=body).status_code == 200  # 2xx, no usage in it: the reservation is charged
            assert settled(used, 342) == 342
            # the reservation counted at admission, the unmeasured count when the answer ends: wait for it
            assert settled(lambda: usage(home, proxy, env)["unmeasured"], 2) == 2  # the 500 and this one: no usage in either
            # a caller that hangs up mid-stream, before the stream's end: at least the reservation
            gate = uuid.uuid4().hex
            with c.stream("POST", f"{base}/sse/openai?prompt=3&completion=4&gate={gate}", json=body) as r:
                for chunk in r.iter_raw():
                    if b"Hel" in chunk:
                        break
            upstream.gates.release(gate)
            assert settled(used, 642) == 642
    finally:
        if backend == "redis":
            rr_cli(home, "usage", "reset", "--proxy", proxy, "--yes", env=env)


def test_cost_meter_counts_money_from_both_shapes_and_refuses_unpriced_models(tmp_path, upstream, silent, pki):
    home, proxy = home_for(tmp_path, upstream, silent)
    base = f"https://127.0.0.1:{upstream.port}"
    upstream.answer(
        "/v1/chat/completions",
        lambda rec: (200, "application/json", json.dumps({"model": "gpt-4o-mini-2024-07-18", "usage": {"prompt_tokens": 2000, "completion_tokens": 500}}).encode()),
    )
    spend = lambda: usage(home, proxy, {}, "spend", "month")  # noqa: E731
    with ProxyProcess(home, upstream_ca=pki.ca_cert) as p, client(p, proxy) as c:
        r = c.post(f"{base}/v1/chat/completions", json={"model": "gpt-4o-mini", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200
        assert settled(lambda: spend()["used"], "0.000600") == "0.000600"  # 2 × 0.00015 + 0.5 × 0.0006, exactly
        # Anthropic's stream: input in message_start, cumulative output in message_delta
        with c.stream("POST", f"{base}/sse/anthropic?input=1000&output=250&split=1", json={"model": "claude-3-5-haiku", "max_tokens": 500, "stream": True}) as r:
            assert r.status_code == 200
            r.read()
        streamed = r.headers["rr-request-id"]
        settled(lambda: spend()["used"], "0.002400")  # (not the whole row: its other fields move too)
        row = spend()
        assert (row["used"], row["used_micros"], row["limit"], row["currency"]) == ("0.002400", 2400, "0.010000", "USD")
        text = rr_cli(home, "usage", "--proxy", proxy).output
        assert "0.0024 USD" in text and "0.01 USD" in text
        # a model without a price is refused before it leaves
        before = len(upstream.received)
        refused = c.post(f"{base}/v1/chat/completions", json={"model": "gpt-5-ultra", "max_tokens": 10})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "unknown-model"
        assert "gpt-5-ultra" in refused.json()["error"]["message"] and "spend" in refused.json()["error"]["message"]
        assert len(upstream.received) == before
        # a reservation that does not fit the money left is refused: 4096 tokens at 0.004/1k is 0.016 > 0.0076
        big = c.post(f"{base}/v1/chat/completions", json={"model": "claude-3-5-haiku", "max_tokens": 4096})
        assert big.status_code == 429 and big.json()["error"]["code"] == "quota-exceeded"
        assert len(upstream.received) == before
        # a 2xx answer without usage keeps its reservation (10 output tokens + the body as input)
        assert c.post(f"{base}/v1/echo", json={"model": "gpt-4o-mini", "max_tokens": 10}).status_code == 200
        settled(lambda: spend()["unmeasured"], 1)
        row = spend()
        assert row["unmeasured"] == 1 and row["used_micros"] == 2400 + 6 + 6  # ceil(38 bytes × 0.15 µ) + 10 × 0.6 µ
        # each request's audit record says what it cost
        assert audit_record(home, streamed, proxy=proxy)["charged"] == {"spend": "0.0018 USD"}
        assert audit_record(home, refused.headers["rr-request-id"], proxy=proxy)["charged"] is None
    rr_cli(home, "usage", "reset", "--proxy", proxy, "--meter", "spend", "--yes")
    row = spend()
    assert (row["used"], row["unmeasured"]) == ("0.000000", 0)  # the unmeasured count of a cost meter resets with it


@pytest.mark.parametrize("backend", ["embedded", "redis"])
def test_a_hostile_upstreams_giant_usage_saturates_the_counter_and_breaks_nothing(request, tmp_path, upstream, silent, pki, backend):
    """10**30 tokens: Redis' INCRBY refused it (rr answered 500) and the embedded
    counters could no longer be written to the database (BIGINT). Now the counter
    saturates at 2**53: the budget is spent, the answer passes, counting goes on."""
    env = {"RR_REDIS_URL": request.getfixturevalue("redis_url")} if backend == "redis" else {}
    home, proxy = home_for(tmp_path, upstream, silent)
    base = f"https://127.0.0.1:{upstream.port}"
    try:
        with ProxyProcess(home, upstream_ca=pki.ca_cert, env=env) as p, client(p, proxy) as c:
            r = c.post(f"{base}/usage/{10**30}", json={"max_tokens": 5})
            assert r.status_code == 200 and r.json()["usage"]["total_tokens"] == 10**30
            assert settled(lambda: usage(home, proxy, env)["used"], 2**53) == 2**53
            assert c.post(f"{base}/usage/1", json={"max_tokens": 5}).status_code == 429
            assert c.post(f"{base}/usage/{10**30}", json={"max_tokens": 5}).status_code == 429
        # the counters were written to the database (or Redis) and read back by a new process
        with ProxyProcess(home, upstream_ca=pki.ca_cert, env=env) as p, client(p, proxy) as c:
            assert c.post(f"{base}/usage/1", json={"max_tokens": 5}).status_code == 429
        assert usage(home, proxy, env)["used"] == 2**53
    finally:
        if backend == "redis":
            rr_cli(home, "usage", "reset", "--proxy", proxy, "--yes", env=env)
