"""`rr run --workers N` end to end: N real mitmdump workers on one port, sharing
the configuration, exact counters (Redis) and the audit trail; a killed worker
is started again; combinations that cannot be shared are refused."""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import threading
import uuid

import httpx
import pytest

from rr_addon.testing.home import prepare_home, rr_cli
from rr_addon.testing.proxy import ProxyProcess, free_port
from rr_addon.testing.wait import eventually

POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials: [{{name: live, kind: bearer, secret: sk_workers_SECRET}}]
proxies:
  - name: {proxy}
    targets: [{{target: api}}]
    meters:
      - {{name: requests, per: credential, limits: {{day: 20}}, when: {{path: "^/limited/"}}}}
    credentials:
      - {{name: a, auth: api_key, secret: KEY_a}}
"""


def worker_pids(proxy: ProxyProcess) -> dict[int, int]:
    """Worker number -> pid of its latest start, from the supervisor's log."""
    return {int(i): int(pid) for i, pid in re.findall(r"worker (\d+) of \d+ started \(pid (\d+)\)", proxy.log_text())}


def wait_listening(proxy: ProxyProcess, worker: int, times: int = 1, timeout: float = 60.0) -> None:
    def listening() -> bool:
        assert proxy.proc.poll() is None, proxy.log_text()[-3000:]
        return proxy.log_text().count(f"rr: worker {worker} listening") >= times

    eventually(listening, timeout, lambda: f"worker {worker} listening:\n{proxy.log_text()[-3000:]}")


def fetch(proxy: ProxyProcess, user: str, path: str, port: int) -> int:
    """One request on a fresh connection (the kernel picks the worker per connection)."""
    verify = ssl.create_default_context(cafile=str(proxy.ca))
    with httpx.Client(proxy=proxy.url(user, "KEY_a"), verify=verify, timeout=30) as c:
        return c.get(f"https://127.0.0.1:{port}{path}").status_code


@pytest.fixture
def shared_home(tmp_path, upstream):
    name = f"w-{uuid.uuid4().hex[:8]}"  # unique: this run's counters in the shared Redis
    home = tmp_path / "home"
    prepare_home(home, POLICY.format(port=upstream.port, proxy=name))
    return home, name


@pytest.mark.services
def test_two_workers_share_the_port_exact_counters_and_the_audit_trail(shared_home, upstream, pki, redis_url):
    home, name = shared_home
    metrics = free_port()
    env = {"RR_REDIS_URL": redis_url}
    with ProxyProcess(home, upstream_ca=pki.ca_cert, env=env, args=["--workers", "2", "--set", f"rr_metrics_port={metrics}"]) as proxy:
        wait_listening(proxy, 1)
        wait_listening(proxy, 2)
        marker = uuid.uuid4().hex
        statuses: list[int] = []
        lock = threading.Lock()

        def client() -> None:
            for _ in range(6):
                s = fetch(proxy, name, f"/limited/{marker}", upstream.port)
                with lock:
                    statuses.append(s)

        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(statuses) == 48
        assert statuses.count(200) == 20 and statuses.count(429) == 28  # one quota, exact across workers
        assert len([r for r in upstream.received if marker in r.path]) == 20
        # both workers served part of it: each has its own metrics port (rr_metrics_port + worker - 1)
        served = []
        for port in (metrics, metrics + 1):
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            served.append(sum(float(v) for v in re.findall(rf'^rr_requests_total{{[^}}]*proxy="{name}"[^}}]*}} (\S+)$', text, re.M)))
        assert sum(served) == 48 and all(n > 0 for n in served), served
    # the audit trail holds every request once, from both workers
    audited = lambda: [json.loads(line) for line in rr_cli(home, "audit", "--json", "--proxy", name, "-n", "1000").output.splitlines() if line.strip()]  # noqa: E731
    records = eventually(lambda: len(r := audited()) >= 48 and r, what="48 audit records")
    assert len(records) == 48 and len({r["request_id"] for r in records}) == 48
    assert len({r["dataplane"] for r in records}) == 2
    rr_cli(home, "usage", "reset", "--proxy", name, "--yes", env=env)


@pytest.mark.services
def test_a_killed_worker_is_started_again(shared_home, upstream, pki, redis_url):
    home, name = shared_home
    with ProxyProcess(home, upstream_ca=pki.ca_cert, env={"RR_REDIS_URL": redis_url}, args=["--workers", "2"]) as proxy:
        wait_listening(proxy, 1)
        wait_listening(proxy, 2)
        victim = worker_pids(proxy)[2]
        os.kill(victim, signal.SIGKILL)
        proxy.wait_for_log(f"rr: worker 2 (pid {victim}) exited with -9; starting it again", timeout=30)
        wait_listening(proxy, 2, times=2)
        assert worker_pids(proxy)[2] != victim
        assert [fetch(proxy, name, "/ok", upstream.port) for _ in range(12)] == [200] * 12
        survivors = worker_pids(proxy)
    assert proxy.proc.returncode == 0
    for pid in survivors.values():  # the supervisor stopped its workers on the way out
        assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split()[2]
    rr_cli(home, "usage", "reset", "--proxy", name, "--yes", env={"RR_REDIS_URL": redis_url})


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["--workers", "2"], {"RR_REDIS_URL": None}, "needs meter counters in Redis"),
        (["--web", "--workers", "2"], {"RR_REDIS_URL": "redis://127.0.0.1:6379/8"}, "mitmweb (--web) runs as one process"),
        (["--workers", "0"], {"RR_REDIS_URL": None}, "--workers must be 1 or more"),
    ],
)
def test_workers_that_cannot_share_are_refused(shared_home, args, env, message):
    home, _ = shared_home
    result = rr_cli(home, "run", *args, env=env, check=False)
    assert result.exit_code == 1
    assert message in result.output


def test_a_worker_that_cannot_start_stops_the_supervisor(shared_home):
    home, _ = shared_home
    proxy = ProxyProcess(home, env={"RR_REDIS_URL": "redis://127.0.0.1:6379/8"}, args=["--workers", "2", "--set", "no_such_option=1"])
    assert proxy.run_to_exit(timeout=120) == 1
    log = proxy.log_text()
    assert "before listening; stopping" in log and "no_such_option" in log
