"""What an operator and a caller read when rr refuses: denial log lines name the
caller, host:port, scope and rule; 403 unknown-target names the host asked for
and suggests the fix; plain http to an https-only target says "use https"; an
upstream certificate from a private CA names ssl_verify_upstream_trusted_ca."""

from __future__ import annotations

import ssl

import httpx
import pytest

from rr_addon.testing.home import prepare_home
from rr_addon.testing.proxy import ProxyProcess

POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials: [{{name: live, kind: bearer, secret: sk_msg_UPSTREAM}}]
proxies:
  - name: billing-agent
    targets: [{{target: api}}]
    rules: [{{name: no-deletes, effect: deny, methods: [DELETE], path: "^/v1/customers/"}}]
    credentials: [{{name: agent-1, auth: api_key, secret: KEY_msg}}]
"""


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, upstream, pki):
    home = prepare_home(tmp_path_factory.mktemp("rr-msg"), POLICY.format(port=upstream.port))
    with ProxyProcess(home, upstream_ca=pki.ca_cert) as p:
        yield p


def client(p: ProxyProcess) -> httpx.Client:
    return httpx.Client(proxy=p.url("billing-agent", "KEY_msg"), verify=ssl.create_default_context(cafile=str(p.ca)), timeout=10)


def test_a_denial_log_line_names_caller_host_port_scope_and_rule(proxy, upstream):
    with client(proxy) as c:
        r = c.delete(f"https://127.0.0.1:{upstream.port}/v1/customers/cus_1")
    assert r.status_code == 403
    rid = r.json()["error"]["request_id"]
    proxy.wait_for_log(
        f"deny {rid} caller=billing-agent/agent-1 DELETE https://127.0.0.1:{upstream.port}/v1/customers/cus_1"
        " -> 403 access-denied scope=proxy rule=no-deletes: denied by rule"
    )


def test_unknown_target_names_the_host_and_the_fix(proxy):
    with client(proxy) as c:
        r = c.get("http://not-a-target.invalid:8081/x")
    assert r.status_code == 403 and r.json()["error"]["code"] == "unknown-target"
    message = r.json()["error"]["message"]
    assert "not-a-target.invalid:8081" in message and "add the host to a target of proxy billing-agent" in message
    rid = r.json()["error"]["request_id"]
    proxy.wait_for_log(f"deny {rid} caller=billing-agent/agent-1 GET http://not-a-target.invalid:8081/x -> 403 unknown-target scope=proxy rule=-")


def test_plain_http_to_an_https_only_target_says_use_https(proxy, upstream):
    with client(proxy) as c:
        r = c.get(f"http://127.0.0.1:{upstream.port}/v1/charges")
    assert r.status_code == 403 and r.json()["error"]["code"] == "unknown-target"
    assert f"use https://127.0.0.1 (target api accepts https only)" in r.json()["error"]["message"]


def test_an_untrusted_upstream_certificate_names_the_option_that_trusts_its_ca(tmp_path, upstream):
    home = prepare_home(tmp_path, POLICY.format(port=upstream.port))
    with ProxyProcess(home) as p:  # the upstream's private CA is not trusted
        with client(p) as c:
            r = c.get(f"https://127.0.0.1:{upstream.port}/v1/charges")
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream-unavailable"
        message = r.json()["error"]["message"]
        assert "Certificate verify failed" in message and "ssl_verify_upstream_trusted_ca" in message
        p.wait_for_log(f"upstream certificate of 127.0.0.1:{upstream.port} is not trusted")
        assert "--set ssl_verify_upstream_trusted_ca=" in p.log_text()

