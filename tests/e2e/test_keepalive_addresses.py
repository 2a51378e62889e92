"""A keep-alive client connection carries requests of different callers. A
connection rr opened to a host for a target that allows private addresses (so
its address was never checked) must not carry a request whose target does not:
that target's secret would reach a private address."""

from __future__ import annotations

import base64
import http.client
import uuid

from rr_addon.testing.home import prepare_home
from rr_addon.testing.proxy import ProxyProcess

POLICY = """
targets:
  - name: lab
    hosts: ["127.0.0.1:{port}"]
    schemes: [http]
    allow_private_addresses: true
    credentials: [{{name: c, kind: bearer, secret: sk_lab_SECRET}}]
  - name: prod
    hosts: ["127.0.0.1:{port}"]
    schemes: [http]
    credentials: [{{name: c, kind: bearer, secret: sk_prod_SECRET}}]
proxies:
  - name: lab
    targets: [{{target: lab}}]
    credentials: [{{name: a, auth: api_key, secret: KEY_lab}}]
  - name: prod
    targets: [{{target: prod}}]
    credentials: [{{name: a, auth: api_key, secret: KEY_prod}}]
"""


def test_a_reused_connection_is_held_to_each_requests_address_policy(tmp_path, plain_upstream):
    home = prepare_home(tmp_path, POLICY.format(port=plain_upstream.port))
    with ProxyProcess(home) as p:
        host, port = p.address.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)

        def get(proxy, key):
            marker = uuid.uuid4().hex
            auth = base64.b64encode(f"{proxy}:{key}".encode()).decode()
            conn.request("GET", f"http://127.0.0.1:{plain_upstream.port}/{marker}", headers={"Proxy-Authorization": f"Basic {auth}"})
            r = conn.getresponse()
            return r.status, r.read(), [x for x in plain_upstream.received if marker in x.path]

        try:
            status, _, seen = get("lab", "KEY_lab")
            assert status == 200 and seen[0].header("authorization") == "Bearer sk_lab_SECRET"
            status, body, seen = get("prod", "KEY_prod")  # the same client connection: mitmproxy reuses the upstream one
            assert seen == [], "prod's secret went to a private address"
            assert status == 403 and b"private address" in body, body
            status, _, seen = get("lab", "KEY_lab")  # the connection still serves the target that allows it
            assert status == 200 and len(seen) == 1
        finally:
            conn.close()
