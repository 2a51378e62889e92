"""Two `rr run` data planes behind HAProxy (TCP mode, deploy/haproxy.cfg.example),
sharing this machine's PostgreSQL (a database of this module's own) and Redis.
"""

from __future__ import annotations

import gc
import json
import os
import re
import shutil
import ssl
import subprocess
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import typer
from sqlalchemy import text
from typer.testing import CliRunner

import rr_addon
from rr_addon.store import audit_store
from rr_addon.store.db import make_engine
from rr_addon.testing.home import rr_cli
from rr_addon.testing.proxy import ProxyProcess, free_port, wait_for_port
from rr_addon.testing.wait import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.services]

ROOT = Path(rr_addon.__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "haproxy.cfg.example"


def cli(home: Path, *args: str, env: dict[str, str]):
    """`rr_cli`, then collect the engines it leaves behind. (The rr CLI commands never
    dispose their engine; on PostgreSQL the pooled connections are then closed by the
    garbage collector with a ResourceWarning, an error under this suite's filters.)"""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        result = rr_cli(home, *args, env=env)
        gc.collect()
    return result



POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials: [{{name: live, kind: bearer, secret: sk_multi_SECRET}}]
proxies:
  - name: agent
    targets: [{{target: api}}]
    credentials:
      - {{name: a, auth: api_key, secret: KEY_a}}
{extra}
"""


# ---------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def haproxy() -> str:
    path = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if path is None:
        message = "haproxy is not installed (Debian: apt-get install -y haproxy)"
        if os.environ.get("RR_REQUIRE_SERVICES") == "1":
            pytest.fail(message + " (RR_REQUIRE_SERVICES=1: service-backed tests must run)")
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def pg_url(module_pg_url):
    return module_pg_url


def haproxy_config(listen: int, planes: list[int], stats: int) -> str:
    """The documented example with this test's ports (and without syslog)."""
    cfg = EXAMPLE.read_text()
    cfg = cfg.replace("log /dev/log local0 info", "log stdout format raw local0 info").replace("maxconn 4000", "maxconn 256")
    cfg = cfg.replace("bind 127.0.0.1:8080", f"bind 127.0.0.1:{listen}").replace("bind 127.0.0.1:8404", f"bind 127.0.0.1:{stats}")
    servers = "".join(f"    server rr{i + 1} 127.0.0.1:{port}\n" for i, port in enumerate(planes))
    cfg, n = re.subn(r"(    server rr\d 127\.0\.0\.1:\d+\n)+", servers, cfg)
    assert n == 1, "the example's server lines changed: update this test"
    return cfg.replace("check inter 2s", "check inter 200ms")


class Cluster:
    def __init__(self, home: Path, env: dict[str, str], planes: list[ProxyProcess], lb_port: int, metrics_ports: list[int], stats_port: int):
        self.home, self.env, self.planes, self.lb_port, self.metrics_ports = home, env, planes, lb_port, metrics_ports
        self.stats_port = stats_port
        self.ca = ssl.create_default_context(cafile=str(home / "certs" / "mitmproxy-ca-cert.pem"))

    def lb_status(self) -> dict[int, str]:
        """HAProxy's view of each plane, by port: "UP", "DOWN", "UP 1/2"... (its stats page, as CSV)."""
        rows = httpx.get(f"http://127.0.0.1:{self.stats_port}/;csv", timeout=5).text.lstrip("# ").splitlines()
        head = rows[0].split(",")
        by_name = {f["svname"]: f["status"] for f in (dict(zip(head, r.split(","))) for r in rows[1:]) if f["pxname"] == "rr_dataplanes"}
        return {p.port: by_name.get(f"rr{i + 1}", "") for i, p in enumerate(self.planes)}

    def versions_seen(self) -> list[int]:
        """How many configuration versions each plane has taken (its log says so each time)."""
        return [p.log_text().count("rr now enforces configuration version") for p in self.planes]

    def get(self, key: str, url: str, via: int | None = None) -> httpx.Response:
        """One request on a fresh connection (so the load balancer picks a plane for it)."""
        port = self.lb_port if via is None else via
        with httpx.Client(proxy=f"http://agent:{key}@127.0.0.1:{port}", verify=self.ca, timeout=10) as c:
            return c.get(url)

    def audit_ids(self) -> list[set[str]]:
        """Request ids in each plane's JSON-lines audit file."""
        out = []
        for p in self.planes:
            f = self.home / f"audit-{p.port}.jsonl"
            out.append({json.loads(line)["request_id"] for line in f.read_text().splitlines()} if f.exists() else set())
        return out

    def apply(self, extra: str, upstream_port: int) -> None:
        policy = self.home / f"policy-{uuid.uuid4().hex[:6]}.yaml"
        policy.write_text(POLICY.format(port=upstream_port, extra=extra))
        cli(self.home, "apply", "-f", str(policy), "--prune", env=self.env)


def start_planes(home: Path, env: dict[str, str], pki, n: int, extra_args: list[str] = ()) -> tuple[list[ProxyProcess], list[int]]:
    """n `rr run` processes on one RR_HOME (one CA, one master key), started side by side;
    each writes its own JSON-lines audit file (to see which plane served what)."""
    planes, metrics_ports = [], []
    for i in range(n):
        # one process per plane: with Redis `rr run` would start one worker per core (tests/e2e/test_workers.py)
        p = ProxyProcess(home, upstream_ca=pki.ca_cert, env=env, name=f"rr{i + 1}", args=["--workers", "1", *extra_args])
        p.cmd += ["--set", f"rr_audit_file={home / f'audit-{p.port}.jsonl'}"]
        metrics_ports.append(free_port())
        p.cmd += ["--set", f"rr_metrics_port={metrics_ports[-1]}"]
        planes.append(p)
    with ThreadPoolExecutor(n) as pool:
        list(pool.map(lambda p: p.start(), planes))
    return planes, metrics_ports


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pg_url, redis_url, upstream, pki, haproxy):
    home = tmp_path_factory.mktemp("rr-cluster")
    env = {"RR_DATABASE_URL": pg_url, "RR_REDIS_URL": redis_url}
    home.mkdir(exist_ok=True)
    (home / "policy.yaml").write_text(POLICY.format(port=upstream.port, extra=""))
    cli(home, "init", env=env)  # on PostgreSQL, as rr_addon.testing.home.prepare_home does
    cli(home, "apply", "-f", str(home / "policy.yaml"), env=env)
    planes, metrics_ports = start_planes(home, env, pki, 2)
    lb_port, stats_port = free_port(), free_port()
    cfg = home / "haproxy.cfg"
    cfg.write_text(haproxy_config(lb_port, [p.port for p in planes], stats_port))
    check = subprocess.run([haproxy, "-c", "-q", "-f", str(cfg)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    lb_log = (home / "haproxy.log").open("wb")
    lb = subprocess.Popen([haproxy, "-db", "-f", str(cfg)], stdout=lb_log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(lb_port, 10, lb, home / "haproxy.log")
        c = Cluster(home, env, planes, lb_port, metrics_ports, stats_port)
        c.upstream_port = upstream.port
        yield c
    finally:
        lb.terminate()
        lb.wait(10)
        lb_log.close()
        for p in planes:
            p.stop()


# ---------------------------------------------------------------------------
# what works with the addon as it is


def test_the_documented_example_is_a_valid_haproxy_configuration(haproxy, tmp_path):
    r = subprocess.run([haproxy, "-c", "-f", str(EXAMPLE)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_both_data_planes_serve_traffic_through_the_load_balancer(cluster, upstream):
    marker = uuid.uuid4().hex
    url = f"https://127.0.0.1:{upstream.port}/anything/{marker}"
    before = cluster.audit_ids()
    ids = []
    for _ in range(8):
        r = cluster.get("KEY_a", url)
        assert r.status_code == 200, r.text
        ids.append(r.headers["rr-request-id"])
    received = [x for x in upstream.received if marker in x.path]
    assert len(received) == 8 and {x.header("authorization") for x in received} == {"Bearer sk_multi_SECRET"}
    denied = cluster.get("wrong", url)
    assert denied.status_code == 401 and denied.headers["rr-proxy-code"] == "unauthenticated"
    ids.append(denied.headers["rr-request-id"])


    def per_plane_once_all_audited() -> list[set[str]] | None:
        per_plane = [after - b for after, b in zip(cluster.audit_ids(), before)]
        return per_plane if sum(len(s) for s in per_plane) >= len(ids) else None

    per_plane = eventually(per_plane_once_all_audited, what="every request audited")
    assert all(per_plane), f"a data plane served nothing: {[len(s) for s in per_plane]}"
    assert set().union(*per_plane) == set(ids)  # every request audited once, by the plane that served it
    assert sum(len(s) for s in per_plane) == len(ids)


def test_a_change_reaches_both_data_planes(cluster, upstream):
    """Each running plane takes the applied version by itself (how fast: scripts/bench*;
    that a notice, not the poll, brings it: test_listen_notify_delivers_a_change_without_polling)."""
    url = f"https://127.0.0.1:{upstream.port}/anything/reload"
    assert cluster.get("KEY_b", url).status_code == 401
    cluster.apply("      - {name: b, auth: api_key, secret: KEY_b}", upstream.port)
    for p in cluster.planes:
        eventually(lambda: cluster.get("KEY_b", url, via=p.port).status_code == 200, what=lambda: p.log_text()[-1500:])
        p.wait_for_log("rr now enforces configuration version 2")
    assert cluster.get("KEY_b", url).status_code == 200  # and through the load balancer


def test_requests_keep_succeeding_when_a_data_plane_stops(cluster, upstream, pki):
    """HAProxy retries a refused connection on the other plane and its health check takes the stopped one out."""
    url = f"https://127.0.0.1:{upstream.port}/anything/failover"
    victim = cluster.planes[-1]
    victim.stop()
    try:
        eventually(lambda: cluster.lb_status()[victim.port].startswith("DOWN"), what="HAProxy's health check taking the plane out")
        for _ in range(4):
            assert cluster.get("KEY_a", url).status_code == 200
    finally:
        victim.start()  # same port, same database: it rejoins
        eventually(lambda: cluster.lb_status()[victim.port] == "UP", what="the plane back in HAProxy's rotation")


# ---------------------------------------------------------------------------
# what needs the control-plane modules wired into the addon


def _ops_app() -> typer.Typer:
    from rr_addon.cli import app

    return app


def test_rr_status_lists_both_data_planes_with_their_version(cluster):
    env = {**cluster.env, "RR_HOME": str(cluster.home), "COLUMNS": "200"}

    def status() -> tuple[dict, list[dict]] | None:
        r = CliRunner().invoke(_ops_app(), ["status", "--json"], env=env)
        assert r.exit_code == 0, r.output
        data = json.loads(r.output)
        live = [p for p in data["dataplanes"] if not p["stale"]]
        return (data, live) if len(live) == 2 and all(p["config_version"] == data["config_version"] for p in live) else None

    data, live = eventually(status, what="both planes live on the current version")
    assert sorted(p["listen"] for p in live) == sorted(p.address for p in cluster.planes)
    assert all(p["config_version"] == data["config_version"] and p["heartbeat_age_s"] < 10 for p in live)


def test_the_database_audit_trail_holds_one_record_per_request_from_both_planes(cluster, upstream):
    url = f"https://127.0.0.1:{upstream.port}/anything/db-audit?secret=value"
    ids = [cluster.get(key, url).headers["rr-request-id"] for key in ("KEY_a", "wrong", "KEY_a", "KEY_a", "wrong", "KEY_a")]
    engine = make_engine(cluster.env["RR_DATABASE_URL"])
    try:
        records = eventually(lambda: len(r := audit_store.records(engine, ids)) >= len(ids) and r, what="every audit record in the database")
    finally:
        engine.dispose()
    assert sorted(r["request_id"] for r in records) == sorted(ids)  # exactly one each
    assert [r["status"] for r in sorted(records, key=lambda r: ids.index(r["request_id"]))] == [200, 401, 200, 200, 401, 200]
    assert len({r["dataplane"] for r in records}) == 2
    assert "secret=value" not in json.dumps(records) and "sk_multi_SECRET" not in json.dumps(records)


def test_each_data_plane_exports_its_requests(cluster, upstream):
    url = f"https://127.0.0.1:{upstream.port}/anything/metrics"

    def served() -> list[float]:
        out = []
        for port in cluster.metrics_ports:
            body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            out.append(sum(float(m) for m in re.findall(r'^rr_requests_total\{[^}]*proxy="agent"[^}]*\} (\S+)$', body, re.M)))
        return out

    before = served()
    for _ in range(6):
        assert cluster.get("KEY_a", url).status_code == 200
    after = served()
    assert sum(after) - sum(before) == 6
    assert all(a > b for a, b in zip(after, before))


def listeners(url: str) -> int:
    """Connections to this database that LISTEN for configuration changes (a plane keeps one)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'")).scalar_one()
    finally:
        engine.dispose()


def test_listen_notify_delivers_a_change_without_polling(cluster, upstream, pki, tmp_path):
    """Two more planes on the same database that poll only every hour: only the notification can bring the change."""
    home = tmp_path / "slow"
    home.mkdir()
    shutil.copy2(cluster.home / "rr.key", home / "rr.key")  # the same master key and CA as the cluster
    shutil.copytree(cluster.home / "certs", home / "certs")
    # (a float option cannot be given with --set: mitmproxy parses only str, int and bool there)
    (home / "certs" / "config.yaml").write_text("rr_reload_interval_ms: 3600000\n")
    listening = listeners(cluster.env["RR_DATABASE_URL"])
    planes, _ = start_planes(home, cluster.env, pki, 2)
    try:
        for p in planes:
            p.wait_for_log("rr enforces configuration version")
        eventually(lambda: listeners(cluster.env["RR_DATABASE_URL"]) >= listening + 2, what="both new planes LISTENing")
        url = f"https://127.0.0.1:{upstream.port}/anything/notify"
        key = f"KEY_{uuid.uuid4().hex[:6]}"
        assert cluster.get(key, url, via=planes[0].port).status_code == 401
        cluster.apply(f"      - {{name: n, auth: api_key, secret: {key}}}", upstream.port)
        for p in planes:  # long before their first poll, an hour away
            eventually(lambda: cluster.get(key, url, via=p.port).status_code == 200, what=lambda: p.log_text()[-1500:])
    finally:
        for p in planes:
            p.stop()


def test_a_global_quota_across_both_planes_lets_exactly_n_through(cluster, upstream):
    proxy = f"q{uuid.uuid4().hex[:8]}"  # fresh counters in the shared Redis
    extra = f"""  - name: {proxy}
    targets: [{{target: api}}]
    credentials:
      - {{name: q, auth: api_key, secret: KEY_q}}
    meters:
      - {{name: requests, limits: {{day: 5}}}}
"""
    seen = cluster.versions_seen()
    cluster.apply("      - {name: b, auth: api_key, secret: KEY_b}\n" + extra, upstream.port)
    url = f"https://127.0.0.1:{upstream.port}/anything/quota"
    eventually(lambda: all(a > b for a, b in zip(cluster.versions_seen(), seen)), what="both planes on the new version")
    before = cluster.audit_ids()
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: cluster.get("KEY_q", url), range(12)))
    assert sorted(r.status_code for r in responses) == [200] * 5 + [429] * 7
    ids = {r.headers["rr-request-id"] for r in responses}
    eventually(lambda: sum(len(ids & (a - b)) for a, b in zip(cluster.audit_ids(), before)) >= len(ids), what="every request audited")
    assert all(ids & (a - b) for a, b in zip(cluster.audit_ids(), before)), "one plane took every request: not a cluster-wide quota test"
