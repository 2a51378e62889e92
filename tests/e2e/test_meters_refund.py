"""Requests that never reached the upstream do not use request quota: rr's own
502 when the connection is refused or its TLS handshake fails gives back what
admission counted on the meters (embedded counters and Redis alike); a request
the upstream received still counts."""

from __future__ import annotations

import json
import ssl
import uuid

import httpx
import pytest

from rr_addon.testing.home import prepare_home, rr_cli
from rr_addon.testing.proxy import ProxyProcess, free_port

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
proxies:
  - name: {proxy}
    targets: [{{target: live}}, {{target: dead}}, {{target: not-tls}}]
    meters:
      - {{name: requests, per: credential, limits: {{day: 3}}}}
    credentials: [{{name: a, auth: api_key, secret: KEY_refund}}]
"""


@pytest.mark.parametrize("backend", ["embedded", "redis"])
def test_rrs_own_502s_do_not_use_request_quota(request, tmp_path, upstream, plain_upstream, pki, backend):
    env = {"RR_REDIS_URL": request.getfixturevalue("redis_url")} if backend == "redis" else {}
    proxy = f"refund-{uuid.uuid4().hex[:8]}"  # unique: this run's Redis counters only
    dead = free_port()  # nothing listens there
    home = prepare_home(tmp_path, POLICY.format(live=upstream.port, dead=dead, plain=plain_upstream.port, proxy=proxy))
    with ProxyProcess(home, upstream_ca=pki.ca_cert, env=env) as p:
        verify = ssl.create_default_context(cafile=str(p.ca))
        with httpx.Client(proxy=p.url(proxy, "KEY_refund"), verify=verify, timeout=10) as c:
            failed = [c.get(f"https://127.0.0.1:{port}/x").status_code for port in (dead, plain_upstream.port) * 2]
            assert failed == [502] * 4  # connection refused; TLS handshake with a server that speaks none
            ok = [c.get(f"https://127.0.0.1:{upstream.port}/x/{i}").status_code for i in range(4)]
        assert ok == [200, 200, 200, 429]  # the 502s used none of the 3
    rows = [json.loads(x) for x in rr_cli(home, "usage", "--proxy", proxy, "--json", env=env).output.splitlines()]
    used = {x["meter"]: x["used"] for x in rows if x["window"] == "day" and x.get("subject") == "a"}
    assert used["requests"] == 3
    if backend == "redis":
        rr_cli(home, "usage", "reset", "--proxy", proxy, "--yes", env=env)
