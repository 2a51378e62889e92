"""Requests that never reached the upstream do not use request quota: rr's own
502 when the connection is refused or its TLS handshake fails gives back what
admission counted on the meters (embedded counters and Redis alike); a request
the upstream received still counts, even when rr then answers 504."""

from __future__ import annotations

import json
import ssl
import threading
import uuid

import httpx
import pytest

from rr_addon.testing.home import prepare_home, rr_cli
from rr_addon.testing.proxy import ProxyProcess, free_port
from rr_addon.testing.upstream import RawListener

POLICY = """
targets:
  - name: live
    hosts: ["127.0.0.1:{live}"]
    allow_private_addresses: true
    credentials: [{{name: c, kind: bearer, secret: sk_refund_SECRET}}]
  - name: dead
    hosts: ["127.0.0.1:{dead}"]
    allow_private_addresses: true
    credentials: [{{name: c, kind: bearer, secret: sk_refund_SECRET}}]
  - name: not-tls
    hosts: ["127.0.0.1:{plain}"]
    allow_private_addresses: true
    credentials: [{{name: c, kind: bearer, secret: sk_refund_SECRET}}]
  - name: silent
    hosts: ["127.0.0.1:{silent}"]
    schemes: [http]
    allow_private_addresses: true
    credentials: [{{name: c, kind: bearer, secret: sk_refund_SECRET}}]
proxies:
  - name: {proxy}
    targets: [{{target: live}}, {{target: dead}}, {{target: not-tls}}, {{target: silent}}]
    meters:
      - {{name: requests, per: credential, limits: {{day: 3}}}}
    credentials: [{{name: a, auth: api_key, secret: KEY_refund}}]
"""


class Silent(RawListener):
    """Reads the request, never answers."""

    def __init__(self):
        self.done = threading.Event()
        super().__init__()

    def one(self, conn) -> None:
        try:
            conn.recv(65536)
            self.done.wait(30)
        finally:
            conn.close()


@pytest.fixture(scope="module")
def silent():
    s = Silent()
    yield s
    s.done.set()
    s.close()


@pytest.mark.parametrize("backend", ["embedded", "redis"])
def test_rrs_own_502s_do_not_use_request_quota(request, tmp_path, upstream, plain_upstream, silent, pki, backend):
    env = {"RR_REDIS_URL": request.getfixturevalue("redis_url")} if backend == "redis" else {}
    proxy = f"refund-{uuid.uuid4().hex[:8]}"  # unique: this run's Redis counters only
    dead = free_port()  # nothing listens there
    home = prepare_home(tmp_path, POLICY.format(live=upstream.port, dead=dead, plain=plain_upstream.port, silent=silent.port, proxy=proxy))
    with ProxyProcess(home, upstream_ca=pki.ca_cert, env=env, args=["--set", "rr_upstream_timeout=1"]) as p:
        verify = ssl.create_default_context(cafile=str(p.ca))
        with httpx.Client(proxy=p.url(proxy, "KEY_refund"), verify=verify, timeout=10) as c:
            failed = [c.get(f"https://127.0.0.1:{port}/x").status_code for port in (dead, plain_upstream.port) * 2]
            assert failed == [502] * 4  # connection refused; TLS handshake with a server that speaks none
            assert c.get(f"http://127.0.0.1:{silent.port}/x").status_code == 504  # sent, never answered: counts
            ok = [c.get(f"https://127.0.0.1:{upstream.port}/x/{i}").status_code for i in range(3)]
        assert ok == [200, 200, 429]  # the 502s used none of the 3, the 504 one
    rows = [json.loads(x) for x in rr_cli(home, "usage", "--proxy", proxy, "--json", env=env).output.splitlines()]
    used = {x["meter"]: x["used"] for x in rows if x["window"] == "day" and x.get("subject") == "a"}
    assert used["requests"] == 3
    if backend == "redis":
        rr_cli(home, "usage", "reset", "--proxy", proxy, "--yes", env=env)
