"""Access rules through a real proxy: each match field, the four scopes, report
mode, canonical paths (a bypass corpus sent byte-exact), and `rr explain`."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import uuid

import httpx
import pytest

from rr_addon.testing.home import prepare_home, rr_cli
from rr_addon.testing.proxy import ProxyProcess

POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    rules:
      - {{name: no-admin, effect: deny, ignore_case: true, path: "^/admin"}}
    credentials:
      - name: live
        kind: bearer
        secret: sk_rules_SECRET
        rules: [{{name: no-refunds, effect: deny, path: "^/v1/refunds"}}]
proxies:
  - name: agent
    targets: [{{target: api}}]
    rules:
      - {{name: no-deletes, effect: deny, priority: 900, methods: [DELETE], path: "^/v1/customers/"}}
      - {{name: no-debug, effect: deny, headers: [{{name: "^x-debug$"}}]}}
      - {{name: big-pages, effect: deny, query: [{{name: "^limit$", value: "^[0-9]{{4,}}$"}}]}}
      - {{name: cheap-model, effect: deny, methods: [POST], path: "^/v1/chat/", body: [{{json_path: "$.model", value: "^gpt-4o-mini$", presence: absent}}]}}
      - {{name: no-secrets-in-text, effect: deny, methods: [PUT], body: [{{pattern: "BEGIN PRIVATE KEY"}}]}}
    credentials:
      - {{name: a, auth: api_key, secret: KEY_a}}
      - name: ro
        auth: api_key
        secret: KEY_ro
        default_effect: deny
        rules: [{{name: reads-only, effect: allow, methods: [GET, HEAD]}}]
  - name: trial
    mode: report
    targets: [{{target: api}}]
    rules: [{{name: no-posts, effect: deny, methods: [POST]}}]
    credentials: [{{name: t, auth: api_key, secret: KEY_t}}]
"""


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, upstream, pki):
    home = tmp_path_factory.mktemp("rr-rules")
    prepare_home(home, POLICY.format(port=upstream.port))
    with ProxyProcess(home, upstream_ca=pki.ca_cert, args=["-w", str(home / "flows.mitm"), "--set", "rr_inspect_limit=4096"]) as p:
        p.upstream_port = upstream.port
        yield p


def call(proxy, method, path, key="KEY_a", **kw):
    verify = ssl.create_default_context(cafile=str(proxy.ca))
    with httpx.Client(proxy=proxy.url("agent", key), verify=verify, timeout=10) as c:
        return c.request(method, f"https://127.0.0.1:{proxy.upstream_port}{path}", **kw)


def forwarded(upstream, marker):
    return [r for r in upstream.received if r.header("x-marker") == marker]


@pytest.mark.parametrize(
    "method, path, kw, key, status, code, message",
    [
        ("GET", "/v1/charges", {}, "KEY_a", 200, None, None),
        ("DELETE", "/v1/customers/cus_1", {}, "KEY_a", 403, "access-denied", "denied by rule (proxy rule no-deletes)"),
        ("GET", "/v1/customers/cus_1", {}, "KEY_a", 200, None, None),
        ("GET", "/v1/charges", {"headers": {"X-Debug": "1"}}, "KEY_a", 403, "access-denied", "denied by rule (proxy rule no-debug)"),
        ("GET", "/v1/charges?limit=10", {}, "KEY_a", 200, None, None),
        ("GET", "/v1/charges?limit=10000", {}, "KEY_a", 403, "access-denied", "denied by rule (proxy rule big-pages)"),
        ("POST", "/v1/chat/completions", {"json": {"model": "gpt-4o-mini"}}, "KEY_a", 200, None, None),
        ("POST", "/v1/chat/completions", {"json": {"model": "gpt-4o"}}, "KEY_a", 403, "access-denied", "denied by rule (proxy rule cheap-model)"),
        ("POST", "/v1/chat/completions", {"content": b"{oops", "headers": {"content-type": "application/json"}}, "KEY_a", 400, "invalid-request", "request body claims JSON but does not parse"),
        ("POST", "/v1/chat/completions", {"json": {"model": "gpt-4o-mini", "pad": "x" * 5000}}, "KEY_a", 413, "payload-too-large", "request body larger than the inspection limit"),
        ("PUT", "/v1/files/x", {"content": b"-----BEGIN PRIVATE KEY-----\n..."}, "KEY_a", 403, "access-denied", "denied by rule (proxy rule no-secrets-in-text)"),
        ("GET", "/ADMIN/users", {}, "KEY_a", 403, "access-denied", "denied by rule (target rule no-admin)"),
        ("GET", "/v1/refunds/re_1", {}, "KEY_a", 403, "access-denied", "denied by rule (target-credential rule no-refunds)"),
        ("GET", "/v1/charges", {}, "KEY_ro", 200, None, None),
        ("POST", "/v1/charges", {"json": {}}, "KEY_ro", 403, "access-denied", "no rule matched; scope default denies (proxy-credential)"),
    ],
    ids=[
        "allowed",
        "method+path",
        "method-must-match-too",
        "header",
        "query-small",
        "query-value",
        "body-json-allowed",
        "body-json-denied",
        "body-invalid-json",
        "body-over-inspection-limit",
        "body-raw-pattern",
        "target-scope-ignore-case",
        "target-credential-scope",
        "credential-default-deny-allows-reads",
        "credential-default-deny",
    ],
)
def test_match_fields_and_scopes(proxy, upstream, method, path, kw, key, status, code, message):
    marker = uuid.uuid4().hex
    kw = {**kw, "headers": {**kw.get("headers", {}), "x-marker": marker}}
    r = call(proxy, method, path, key, **kw)
    assert r.status_code == status, r.text
    got = forwarded(upstream, marker)
    if code is None:
        assert len(got) == 1 and got[0].header("Authorization") == "Bearer sk_rules_SECRET"
    else:
        body = r.json()["error"]
        assert (body["code"], r.headers["rr-proxy-code"]) == (code, code)
        assert body["message"].startswith(message), body["message"]
        assert got == []


def test_report_mode_forwards_and_flags(proxy, upstream):
    from mitmproxy import io as mio

    marker = uuid.uuid4().hex
    r = call(proxy, "POST", "/v1/anything", key="KEY_t", json={"a": 1}, headers={"x-marker": marker})
    assert r.status_code == 200
    assert len(forwarded(upstream, marker)) == 1
    with open(proxy.home / "flows.mitm", "rb") as f:
        flows = [fl for fl in mio.FlowReader(f).stream() if getattr(fl, "request", None) is not None and fl.request.headers.get("x-marker") == marker]
    (fl,) = flows
    assert fl.comment == "rr would-deny access-denied · trial/t → api/live · proxy rule no-posts"
    assert fl.marked == ":warning:"
    assert fl.metadata["rr"]["result"] == "would-deny" and fl.metadata["rr"]["rule"] == "no-posts"


def raw_get(proxy, target: str, marker: str) -> tuple[int, dict]:
    """Send `GET <target>` byte-exact through the proxy (clients would normalise it)."""
    ctx = ssl.create_default_context(cafile=str(proxy.ca))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(f"CONNECT 127.0.0.1:{proxy.upstream_port} HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Bearer KEY_a\r\n\r\n".encode())
        connect = http.client.HTTPResponse(s, method="CONNECT")
        connect.begin()
        assert connect.status == 200
        with ctx.wrap_socket(s, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET " + target.encode("latin-1") + f" HTTP/1.1\r\nHost: 127.0.0.1\r\nx-marker: {marker}\r\n\r\n".encode())
            resp = http.client.HTTPResponse(tls)
            resp.begin()
            return resp.status, json.loads(resp.read())


@pytest.mark.parametrize(
    "target, outcome",
    [
        ("/admin", "denied"),
        ("/v1/../admin", "denied"),
        ("/v1/./../admin/x", "denied"),
        ("//admin", "denied"),
        ("/%61dmin", "denied"),
        ("/Admin", "denied"),
        ("/%41DMIN", "denied"),
        ("/v1/%2e%2e/admin", "refused"),
        ("/v1/.%2E/admin", "refused"),
        ("/v1%2fadmin", "refused"),
        ("/v1%2Fadmin", "refused"),
        ("/v1/%5C..%5Cadmin", "refused"),
        ("/v1/%252e%252e/admin", "refused"),
        ("/v1/%C0%AE%C0%AE/admin", "refused"),
        ("/v1/..;/admin", "refused"),
        ("/v1\\..\\admin", "refused"),
        ("/admin%00.json", "refused"),
        ("/../admin", "refused"),
        ("/v1/./charges", "/v1/charges"),
        ("/v1//charges///x", "/v1/charges/x"),
        ("/v1/%7Euser", "/v1/~user"),
        ("/v1/caf%c3%a9", "/v1/caf%C3%A9"),
    ],
)
def test_canonicalisation_bypass_corpus(proxy, upstream, target, outcome):
    marker = uuid.uuid4().hex
    status, body = raw_get(proxy, target, marker)
    got = forwarded(upstream, marker)
    if outcome == "denied":
        assert (status, body["error"]["code"]) == (403, "access-denied"), body
        assert got == []
    elif outcome == "refused":
        assert (status, body["error"]["code"]) == (400, "invalid-request"), body
        assert got == []
    else:
        assert status == 200, body
        (r,) = got
        assert r.path == outcome  # the upstream receives exactly the path that was checked


def test_rr_explain(proxy):
    r = rr_cli(proxy.home, "explain", "--credential", "agent/a", "DELETE", f"https://127.0.0.1:{proxy.upstream_port}/v1/customers/cus_1", check=False)
    assert r.exit_code == 2
    text = r.output
    assert "scope proxy: deny — denied by rule (no-deletes)" in text
    assert "✓ no-deletes deny p900  matched" in text
    assert "✗ no-debug deny p500  headers[0] did not match" in text
    assert "scope target: allow — no rule matched; scope default allows" in text
    assert "result 403 access-denied — denied by rule (proxy rule no-deletes)" in text
    r = rr_cli(proxy.home, "explain", "--credential", "a", "POST", f"https://127.0.0.1:{proxy.upstream_port}/v1/chat/x", "-d", '{"model": "gpt-4o-mini"}')
    assert "result allow — all scopes allow" in r.output
    r = rr_cli(proxy.home, "explain", "--credential", "nobody", "GET", "https://x/", check=False)
    assert r.exit_code == 1 and "no proxy credential named 'nobody'" in r.output
