"""Meters end to end: 429 with Retry-After and RateLimit headers, response_value
meters, counts that survive a restart (clean and SIGKILL), `rr usage`, and —
on this machine's real Redis — exact shared counting across two proxies and
the on_backend_error policy when Redis goes away."""

from __future__ import annotations

import json
import signal
import ssl
import stat
import threading
import uuid
from datetime import datetime, timezone

import httpx
import pytest

from rr_addon.testing.home import prepare_home, rr_cli
from rr_addon.testing.proxy import ProxyProcess, free_port
from rr_addon.testing.redis_server import OwnRedis, available
from rr_addon.testing.wait import eventually

POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials: [{{name: live, kind: bearer, secret: sk_meter_SECRET}}]
proxies:
  - name: {proxy}
    targets: [{{target: api}}]
    meters:
      - {{name: requests, per: credential, limits: {{day: 3}}, when: {{path: "^/limited/"}}, on_backend_error: {policy}}}
      - {{name: tokens, type: response_value, response_value: {{json_path: "$.usage.total_tokens"}}, limits: {{day: 100}}, when: {{path: "^/usage/"}}}}
      - {{name: everything}}
    credentials:
      - {{name: a, auth: api_key, secret: KEY_a}}
      - {{name: b, auth: api_key, secret: KEY_b}}
"""


def seconds_to_midnight() -> int:
    now = datetime.now(timezone.utc)
    return 86400 - (now.hour * 3600 + now.minute * 60 + now.second)


def get(proxy, key, path, port, user="p"):
    verify = ssl.create_default_context(cafile=str(proxy.ca))
    with httpx.Client(proxy=proxy.url(user, key), verify=verify, timeout=10) as c:
        return c.get(f"https://127.0.0.1:{port}{path}")


@pytest.fixture(scope="module")
def home(tmp_path_factory, upstream):
    home = tmp_path_factory.mktemp("rr-meters")
    prepare_home(home, POLICY.format(port=upstream.port, proxy="p", policy="deny"))
    return home


def test_quota_refuses_with_retry_after_and_ratelimit_headers(home, upstream, pki):
    with ProxyProcess(home, upstream_ca=pki.ca_cert) as proxy:
        seen = []
        for i in range(3):
            r = get(proxy, "KEY_a", f"/limited/{i}", upstream.port)
            assert r.status_code == 200
            seen.append((r.headers["RateLimit-Policy"], r.headers["RateLimit"]))
        assert seen[0][0] == '"requests";q=3;w=86400'
        assert [s[1].split(";t=")[0] for s in seen] == ['"requests";r=2', '"requests";r=1', '"requests";r=0']
        marker = uuid.uuid4().hex
        r = get(proxy, "KEY_a", f"/limited/{marker}", upstream.port)
        assert r.status_code == 429
        body = r.json()["error"]
        assert body["code"] == "quota-exceeded" and body["message"] == "meter limit reached (meter requests): day window"
        retry = int(r.headers["Retry-After"])
        assert 1 <= retry <= seconds_to_midnight() + 1
        assert r.headers["RateLimit"].startswith('"requests";r=0;t=')
        assert not [x for x in upstream.received if marker in x.path]  # nothing forwarded
        # per credential: b has its own count; unmetered paths are not limited
        assert get(proxy, "KEY_b", "/limited/x", upstream.port).status_code == 200
        assert get(proxy, "KEY_a", "/free", upstream.port).status_code == 200

        # response_value: admitted while the running total is under the limit
        assert get(proxy, "KEY_a", "/usage/60", upstream.port).status_code == 200
        eventually(lambda: used(home, "p", "a").get(("tokens", "day")) == 60, what="the first 60 tokens counted")  # measured after the answer
        assert get(proxy, "KEY_a", "/usage/60", upstream.port).status_code == 200  # 60 < 100: admitted
        r = get(proxy, "KEY_a", "/usage/60", upstream.port)
        assert r.status_code == 429 and "tokens" in r.json()["error"]["message"]
    # a clean shutdown keeps every count
    with ProxyProcess(home, upstream_ca=pki.ca_cert) as proxy:
        assert get(proxy, "KEY_a", "/limited/again", upstream.port).status_code == 429
        assert get(proxy, "KEY_a", "/usage/1", upstream.port).status_code == 429


def test_rr_usage_and_reset(tmp_path, upstream, pki):
    home = tmp_path / "usage"
    prepare_home(home, POLICY.format(port=upstream.port, proxy="u", policy="deny"))
    with ProxyProcess(home, upstream_ca=pki.ca_cert) as proxy:
        for path in ("/limited/1", "/limited/2", "/limited/3", "/usage/60"):
            assert get(proxy, "KEY_a", path, upstream.port, user="u").status_code == 200
        assert get(proxy, "KEY_a", "/limited/4", upstream.port, user="u").status_code == 429
        want = {("requests", "day"): 3, ("tokens", "day"): 60, (None, "day"): 4}  # the tokens are measured after the answer
        eventually(lambda: (u := used(home, "u", "a")) and all(u.get(k) == v for k, v in want.items()), what=lambda: f"{want} flushed: {used(home, 'u', 'a')}")
        r = rr_cli(home, "usage", "--proxy", "u", "--credential", "a", "--json")
        rows = [json.loads(line) for line in r.output.splitlines()]
        by = {(x["meter"], x["window"]): x for x in rows}
        assert (by[("requests", "day")]["used"], by[("requests", "day")]["limit"], by[("requests", "day")]["remaining"]) == (3, 3, 0)
        assert by[("tokens", "day")]["used"] == 60
        assert by[(None, "day")]["used"] == 4  # the per-credential usage counter, always kept (refused requests count nothing)
        assert 0 < by[("requests", "day")]["resets_in"] <= 86400
        assert "usage and meters" in rr_cli(home, "usage").output
        out = rr_cli(home, "usage", "reset", "--proxy", "u", "--credential", "a", "--meter", "requests", "--yes").output
        assert "reset" in out
        eventually(lambda: get(proxy, "KEY_a", "/limited/x", upstream.port, user="u").status_code == 200, what="a running proxy seeing the reset")


def test_sigkill_keeps_what_a_flush_committed(tmp_path, upstream, pki):
    """What the background flush (every 250 ms, nobody asks for it) committed survives a
    SIGKILL, and nothing is counted twice."""
    home = tmp_path / "kill"
    prepare_home(home, POLICY.format(port=upstream.port, proxy="k", policy="deny"))
    proxy = ProxyProcess(home, upstream_ca=pki.ca_cert).start()
    try:
        for i in range(5):
            assert get(proxy, "KEY_a", f"/counted/{i}", upstream.port, user="k").status_code == 200
        flushed = eventually(lambda: (u := used(home, "k", "a")).get(("everything", "day")) == u.get((None, "day")) == 5 and u, what="the five counts flushed")
    finally:
        proxy.stop(signal.SIGKILL)
    after = used(home, "k", "a")
    assert after == flushed and after[("everything", "day")] == 5 and after[(None, "day")] == 5


def used(home, proxy: str, credential: str) -> dict:
    """(meter, window) → used, as stored (`rr usage` reads the database, not the proxy's memory)."""
    rows = [json.loads(x) for x in rr_cli(home, "usage", "--proxy", proxy, "--credential", credential, "--json").output.splitlines()]
    return {(x["meter"], x["window"]): x["used"] for x in rows}


# ---------------------------------------------------------------------------- Redis


@pytest.mark.services
def test_two_proxies_share_one_exact_quota_through_redis(tmp_path, upstream, pki, redis_url):
    proxy_name = f"shared-{uuid.uuid4().hex[:8]}"  # unique: the counters of this run only
    home = tmp_path / "shared"
    prepare_home(home, POLICY.format(port=upstream.port, proxy=proxy_name, policy="deny").replace("day: 3", "day: 20"))
    env = {"RR_REDIS_URL": redis_url}
    one_each = ["--workers", "1"]  # two separate rr run processes (workers sharing one port: tests/e2e/test_workers.py)
    with ProxyProcess(home, upstream_ca=pki.ca_cert, env=env, name="a", args=one_each) as one, ProxyProcess(home, upstream_ca=pki.ca_cert, env=env, name="b", args=one_each) as two:
        marker = uuid.uuid4().hex
        statuses: list[int] = []
        lock = threading.Lock()

        def client(proxy):
            verify = ssl.create_default_context(cafile=str(proxy.ca))
            with httpx.Client(proxy=proxy.url(proxy_name, "KEY_a"), verify=verify, timeout=20) as c:
                for _ in range(6):
                    s = c.get(f"https://127.0.0.1:{upstream.port}/limited/{marker}").status_code
                    with lock:
                        statuses.append(s)

        threads = [threading.Thread(target=client, args=(p,)) for p in (one, two) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(statuses) == 48
        assert statuses.count(200) == 20 and statuses.count(429) == 28
        assert len([r for r in upstream.received if marker in r.path]) == 20  # the upstream received exactly N
    rows = [json.loads(x) for x in rr_cli(home, "usage", "--proxy", proxy_name, "--json", env=env).output.splitlines()]
    assert {(x["meter"], x["subject"]): x["used"] for x in rows if x["window"] == "day" and x["meter"] == "requests"}[("requests", "a")] == 20
    rr_cli(home, "usage", "reset", "--proxy", proxy_name, "--yes", env=env)


def wait_for_record(path, request_id):
    """The record of `request_id` in the JSON-lines audit file, once written."""

    def find():
        records = (json.loads(line) for line in (path.read_text().splitlines() if path.exists() else []))
        return next((r for r in records if r["request_id"] == request_id), None)

    return eventually(find, what=f"the audit record of {request_id}")


@pytest.mark.services
def test_redis_lost_follows_each_meters_policy_and_recovers(tmp_path, upstream, pki, redis_url):
    assert available(), "redis-server is not installed"
    redis = OwnRedis(tmp_path).start()
    home = tmp_path / "lost"
    policy = POLICY.format(port=upstream.port, proxy="deny-p", policy="deny")
    allow_proxy = POLICY.format(port=upstream.port, proxy="allow-p", policy="allow").split("proxies:")[1]
    prepare_home(home, policy + allow_proxy.replace("KEY_a", "KEY_c").replace("KEY_b", "KEY_d"))
    env = {"RR_REDIS_URL": redis.url}
    metrics_port = free_port()
    # one worker: the metrics of one process are read below (with Redis `rr run` starts one per core)
    args = ["--workers", "1", "--set", f"rr_audit_file={home / 'audit.jsonl'}", "--set", f"rr_metrics_port={metrics_port}"]
    try:
        with ProxyProcess(home, upstream_ca=pki.ca_cert, env=env, args=args) as proxy:
            counted = get(proxy, "KEY_a", "/limited/1", upstream.port, user="deny-p")
            assert counted.status_code == 200
            redis.stop()
            r = get(proxy, "KEY_a", "/limited/2", upstream.port, user="deny-p")
            assert r.status_code == 429
            assert r.json()["error"]["message"].startswith("counters unavailable; the meter denies on backend error")
            uncounted = get(proxy, "KEY_c", "/limited/2", upstream.port, user="allow-p")
            assert uncounted.status_code == 200
            proxy.wait_for_log("counters unavailable")
            # the uncounted request is told apart from a counted one: in its audit record and in the metrics
            record = wait_for_record(home / "audit.jsonl", uncounted.headers["rr-request-id"])
            assert stat.S_IMODE((home / "audit.jsonl").stat().st_mode) == 0o600  # as private as the database
            assert (record["result"], record["degraded"]) == ("allow", "counters unavailable; allowed without counting")
            assert wait_for_record(home / "audit.jsonl", counted.headers["rr-request-id"])["degraded"] is None
            text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
            assert 'rr_degraded_decisions_total{proxy="allow-p",result="allow"} 1.0' in text
            assert 'rr_degraded_decisions_total{proxy="deny-p",result="deny"} 1.0' in text
            redis.start()
            eventually(lambda: get(proxy, "KEY_a", "/limited/3", upstream.port, user="deny-p").status_code == 200, what="recovery after Redis came back")
            proxy.wait_for_log("counters available again")
    finally:
        redis.stop()
