"""The governed forward proxy end to end: a real `rr run`, a real TLS upstream, real clients."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import subprocess
import uuid

import httpx
import pytest
import requests
from mitmproxy.http import HTTPFlow

from rr_addon.testing.home import prepare_home
from rr_addon.testing.proxy import ProxyProcess, free_port

SECRETS = {
    "live": "sk_live_e2e_SECRET",
    "hdr": "hdr_SECRET",
    "qry": "q&SECRET",
    "bas": "bas_SECRET",
    "jwt": "eyJ.jwt_SECRET.sig",
    "cus": "cus_SECRET",
    "local": "sk_local_SECRET",
    "plain": "plain_SECRET",
}
POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    caller_headers: [x-api-key]
    credentials:
      - {{name: live, kind: bearer, secret: {live}}}
      - {{name: hdr, kind: api_key, header: X-Upstream-Key, secret: {hdr}}}
      - {{name: qry, kind: api_key, query: api_key, secret: "{qry}"}}
      - {{name: bas, kind: basic, username: up, secret: {bas}}}
      - {{name: jwt, kind: jwt, secret: {jwt}}}
      - {{name: cus, kind: custom, headers: {{X-Sig: "v1 {{secret}}", X-Static: static}}, secret: {cus}}}
      - {{name: none, kind: none}}
  - name: local-name
    hosts: ["localhost:{port}"]
    allow_private_addresses: true
    credentials: [{{name: live, kind: bearer, secret: {local}}}]
  - name: guarded
    hosts: ["localhost:{port}"]
  - name: down
    hosts: ["127.0.0.1:{closed}"]
    allow_private_addresses: true
  - name: plain
    hosts: ["127.0.0.1:{plain_port}"]
    schemes: [http]
    allow_private_addresses: true
    credentials: [{{name: live, kind: bearer, secret: {plain}}}]
  - name: rawtcp
    hosts: ["127.0.0.1:{raw}"]
    allow_private_addresses: true
proxies:
  - name: agent
    targets: [{{target: api, credential: live}}, {{target: guarded}}, {{target: down}}, {{target: plain}}, {{target: rawtcp}}]
    credentials:
      - {{name: main, auth: api_key, secret: KEY_main}}
      - {{name: ci, auth: basic, username: ci, secret: KEY_ci}}
      - {{name: hdr, auth: api_key, secret: KEY_hdr, target_credentials: {{api: hdr}}}}
      - {{name: qry, auth: api_key, secret: KEY_qry, target_credentials: {{api: qry}}}}
      - {{name: bas, auth: api_key, secret: KEY_bas, target_credentials: {{api: bas}}}}
      - {{name: jwt, auth: api_key, secret: KEY_jwt, target_credentials: {{api: jwt}}}}
      - {{name: cus, auth: api_key, secret: KEY_cus, target_credentials: {{api: cus}}}}
      - {{name: none, auth: api_key, secret: KEY_none, target_credentials: {{api: none}}}}
  - name: other
    targets: [{{target: local-name}}]
    credentials: [{{name: o, auth: bearer, secret: KEY_other}}]
"""


class RawListener:
    """A TCP listener that counts connections (to prove none is opened)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.01)
        self.port = self.sock.getsockname()[1]

    def accepted(self) -> int:
        n = 0
        while True:
            try:
                conn, _ = self.sock.accept()
                conn.close()
                n += 1
            except OSError:
                return n


@pytest.fixture(scope="module")
def raw():
    r = RawListener()
    yield r
    r.sock.close()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, upstream, plain_upstream, pki, raw):
    home = tmp_path_factory.mktemp("rr-e2e")
    closed = free_port()
    policy = POLICY.format(port=upstream.port, closed=closed, plain_port=plain_upstream.port, raw=raw.port, **SECRETS)
    prepare_home(home, policy)
    with ProxyProcess(home, upstream_ca=pki.ca_cert, args=["-w", str(home / "flows.mitm"), "--set", "flow_detail=4", "--set", "termlog_verbosity=debug"]) as p:
        p.closed_port = closed
        yield p


def tag() -> str:
    return uuid.uuid4().hex[:12]


def received(upstream, marker):
    return [r for r in upstream.received if marker in r.path]


def client(proxy, secret=None, user="agent", **kw) -> httpx.Client:
    verify = ssl.create_default_context(cafile=str(proxy.ca))
    return httpx.Client(proxy=proxy.url(user, secret) if secret else proxy.url(), verify=verify, timeout=10, **kw)


def error_of(resp) -> dict:
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert set(body) == {"error", "message"} and set(body["error"]) == {"code", "message", "request_id"}
    assert body["message"] == f"rr {body['error']['code']}: {body['error']['message']}"  # for clients that print one string
    assert resp.headers["rr-request-id"] == body["error"]["request_id"]
    assert resp.headers["rr-proxy-code"] == body["error"]["code"]
    return body["error"]


def test_governed_call_injects_the_secret(proxy, upstream):
    m = tag()
    with client(proxy, "KEY_main") as c:
        r = c.get(f"https://127.0.0.1:{upstream.port}/anything/{m}", headers={"Authorization": "Bearer caller-own"})
    assert r.status_code == 200
    assert r.headers["rr-request-id"]
    assert "rr-proxy-code" not in r.headers
    (got,) = received(upstream, m)
    assert got.header("Authorization") == f"Bearer {SECRETS['live']}"
    assert got.header("Proxy-Authorization") is None and got.header("X-RR-Authorization") is None
    # the upstream echoed the secret back; the caller sees the placeholder
    assert SECRETS["live"] not in r.text and '"Authorization": "Bearer [rr:api/live]*****"' in r.text


def test_a_secret_echoed_in_a_response_header_is_masked(proxy, upstream):
    with client(proxy, "KEY_main") as c:
        r = c.get(f"https://127.0.0.1:{upstream.port}/echo-header/authorization")
    assert r.status_code == 200
    assert r.headers["x-echoed"] == "Bearer [rr:api/live]*****"
    assert r.json() == {"value": "Bearer [rr:api/live]*****"}
    assert SECRETS["live"] not in str(r.headers)


@pytest.mark.parametrize(
    "key, check",
    [
        ("KEY_hdr", lambda g: g.header("X-Upstream-Key") == "hdr_SECRET"),
        ("KEY_qry", lambda g: g.path.endswith("?x=1&api_key=q%26SECRET")),
        ("KEY_bas", lambda g: g.header("Authorization") == "Basic " + base64.b64encode(b"up:bas_SECRET").decode()),
        ("KEY_jwt", lambda g: g.header("Authorization") == "Bearer eyJ.jwt_SECRET.sig"),
        ("KEY_cus", lambda g: g.header("X-Sig") == "v1 cus_SECRET" and g.header("X-Static") == "static"),
        ("KEY_none", lambda g: g.header("Authorization") is None),
    ],
    ids=["api_key-header", "api_key-query", "basic", "jwt", "custom", "none"],
)
def test_every_target_credential_kind(proxy, upstream, key, check):
    m = tag()
    with client(proxy, key) as c:
        r = c.get(f"https://127.0.0.1:{upstream.port}/anything/{m}?x=1")
    assert r.status_code == 200
    (got,) = received(upstream, m)
    assert check(got), got
    for secret in SECRETS.values():
        assert secret not in r.text


@pytest.mark.parametrize(
    "how",
    ["proxy-basic-user", "x-rr-authorization", "x-rr-raw", "authorization-bearer", "caller-header", "plain-http-proxy-authorization"],
)
def test_caller_credential_channels(proxy, upstream, plain_upstream, how):
    m = tag()
    url = f"https://127.0.0.1:{upstream.port}/anything/{m}"
    headers = {}
    if how == "proxy-basic-user":
        c = client(proxy, "KEY_ci", user="ci")
    elif how == "plain-http-proxy-authorization":
        c = client(proxy, "KEY_main")
        url = f"http://127.0.0.1:{plain_upstream.port}/anything/{m}"
    else:
        c = client(proxy)
        headers = {
            "x-rr-authorization": {"X-RR-Authorization": "Bearer KEY_main"},
            "x-rr-raw": {"X-RR-Authorization": "KEY_main"},
            "authorization-bearer": {"Authorization": "Bearer KEY_main"},
            "caller-header": {"x-api-key": "KEY_main"},
        }[how]
    with c:
        r = c.get(url, headers=headers)
    assert r.status_code == 200, r.text
    up = plain_upstream if how.startswith("plain") else upstream
    (got,) = received(up, m)
    for h in ("Proxy-Authorization", "X-RR-Authorization", "x-api-key"):
        assert got.header(h) is None, h
    expected = SECRETS["plain"] if how.startswith("plain") else SECRETS["live"]
    assert got.header("Authorization") == f"Bearer {expected}"


def test_requests_library_with_https_proxy(proxy, upstream):
    m = tag()
    r = requests.get(
        f"https://127.0.0.1:{upstream.port}/anything/{m}",
        proxies={"https": proxy.url("agent", "KEY_main")},
        verify=str(proxy.ca),
        timeout=10,
    )
    assert r.status_code == 200
    assert received(upstream, m)[0].header("Authorization") == f"Bearer {SECRETS['live']}"


def curl(proxy, url, *args, key="KEY_main"):
    """(status, http version, body) of one curl call through the proxy."""
    out = subprocess.run(
        ["curl", "-sS", *args, "--cacert", str(proxy.ca), "-x", proxy.url("agent", key), "-w", "\n%{http_code} %{http_version}", url],
        capture_output=True,
        text=True,
        timeout=20,
    )
    body, _, status = out.stdout.rpartition("\n")
    code, version = status.split()
    return int(code), version, body


@pytest.mark.parametrize("flag, version", [("--http1.1", "1.1"), ("--http2", "2")])
def test_curl_http1_and_http2(proxy, upstream, flag, version):
    m = tag()
    code, got_version, body = curl(proxy, f"https://127.0.0.1:{upstream.port}/anything/{m}", flag)
    assert (code, got_version) == (200, version)
    assert received(upstream, m)[0].header("Authorization") == f"Bearer {SECRETS['live']}"
    assert SECRETS["live"] not in body and "[rr:api/live]" in body
    code, got_version, body = curl(proxy, f"https://127.0.0.1:{upstream.port}/anything/{m}", flag, key="wrong")
    assert (code, got_version) == (401, version) and json.loads(body)["error"]["code"] == "unauthenticated"
    code, got_version, body = curl(proxy, f"https://127.0.0.1:{proxy.closed_port}/x", flag)
    assert (code, got_version) == (502, version) and json.loads(body)["error"]["code"] == "upstream-unavailable"
    code, got_version, body = curl(proxy, f"https://localhost:{upstream.port}/anything/{m}", flag)
    assert (code, got_version) == (403, version) and json.loads(body)["error"]["code"] == "access-denied"
    assert len(received(upstream, m)) == 1


@pytest.mark.parametrize(
    "secret, user, message",
    [
        (None, None, "no caller credential presented"),
        ("wrong", "agent", "caller credential matches no proxy credential"),
        ("KEY_ci", "not-ci", "caller credential matches no proxy credential"),
        ("header:Bearer sk-an-upstream-key", None, "caller credential matches no proxy credential"),
    ],
    ids=["none", "unknown", "basic-wrong-user", "upstream-key-in-authorization"],
)
def test_unauthenticated_forwards_nothing(proxy, upstream, secret, user, message):
    m = tag()
    headers = {}
    if secret and secret.startswith("header:"):
        headers, secret = {"Authorization": secret[7:]}, None
    with client(proxy, secret, user=user) as c:
        r = c.get(f"https://127.0.0.1:{upstream.port}/anything/{m}", headers=headers)
    assert r.status_code == 401
    err = error_of(r)
    assert err["code"] == "unauthenticated" and err["message"].startswith(message)
    assert received(upstream, m) == []


def test_unknown_target(proxy, upstream):
    m = tag()
    with client(proxy, "KEY_other", user="other") as c:  # proxy "other" only has localhost:port
        r = c.get(f"https://127.0.0.1:{upstream.port}/anything/{m}")
    assert r.status_code == 403 and error_of(r)["code"] == "unknown-target"
    assert received(upstream, m) == []
    with client(proxy, "KEY_other", user="other") as c:
        r = c.get(f"https://localhost:{upstream.port}/anything/{m}")
    assert r.status_code == 200
    assert received(upstream, m)[0].header("Authorization") == f"Bearer {SECRETS['local']}"


def test_private_address_refused_unless_allowed(proxy, upstream):
    m = tag()
    with client(proxy, "KEY_main") as c:
        r = c.get(f"https://localhost:{upstream.port}/anything/{m}")
    assert r.status_code == 403
    err = error_of(r)
    assert err["code"] == "access-denied"
    assert err["message"].startswith("target host resolves to a private address (target rule allow_private_addresses)")
    assert received(upstream, m) == []


def test_upstream_down_is_a_json_502(proxy, upstream):
    with client(proxy, "KEY_main") as c:
        r = c.get(f"https://127.0.0.1:{proxy.closed_port}/x")
        assert r.status_code == 502
        err = error_of(r)
        assert err["code"] == "upstream-unavailable" and err["message"].startswith("upstream connection failed")
        # the same client connection keeps working
        assert c.get(f"https://127.0.0.1:{upstream.port}/anything/{tag()}").status_code == 200


def test_connect_to_a_port_no_target_allows(proxy):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n")
        resp = http.client.HTTPResponse(s, method="CONNECT")
        resp.begin()
        body = json.loads(resp.read())
    assert resp.status == 403
    assert body["error"]["code"] == "unknown-target" and body["error"]["message"] == "no target allows this port: 127.0.0.1:22; check the URL's port"


def test_tunnel_without_http_is_closed_not_relayed(proxy, raw):
    before = raw.accepted()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(f"CONNECT 127.0.0.1:{raw.port} HTTP/1.1\r\nHost: 127.0.0.1\r\nProxy-Authorization: Bearer KEY_main\r\n\r\n".encode())
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        s.sendall(b"\x00\x01SSH-2.0-not-http\r\n" * 4)
        s.settimeout(5)
        data = b""
        try:
            while chunk := s.recv(4096):
                data += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    assert data == b""
    assert raw.accepted() - before == 0


def test_unauthenticated_connect_opens_no_upstream_connection(proxy, raw):
    before = raw.accepted()
    ctx = ssl.create_default_context(cafile=str(proxy.ca))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(f"CONNECT 127.0.0.1:{raw.port} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        with ctx.wrap_socket(s, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            head = tls.recv(65536).decode()
    assert head.startswith("HTTP/1.1 401")
    assert raw.accepted() - before == 0


def test_flows_logs_and_dumps_hold_no_secret(proxy, upstream):
    """Secrets never shown (docs/security.md) on the -w dump and the log (flow_detail=4 prints full headers and bodies)."""
    from mitmproxy import io as mio

    with client(proxy, "KEY_qry") as c:
        c.get(f"https://127.0.0.1:{upstream.port}/anything/{tag()}?x=1")
    with client(proxy, "KEY_main") as c:
        c.post(f"https://127.0.0.1:{upstream.port}/anything/{tag()}", json={"a": 1})
    log = proxy.log_text()
    for secret in [*SECRETS.values(), "KEY_main", "KEY_qry", "q%26SECRET"]:
        assert secret not in log, secret
    assert "[rr:api/live]" in log
    # a flow dump made while running (the file is flushed per flow)
    with open(proxy.home / "flows.mitm", "rb") as f:
        flows = list(mio.FlowReader(f).stream())
    assert flows
    raw = (proxy.home / "flows.mitm").read_bytes()
    for secret in [*SECRETS.values(), "KEY_main", "KEY_qry", "q%26SECRET", base64.b64encode(b"agent:KEY_main").decode()]:
        assert secret.encode() not in raw, secret
    placeholders = [f.request.headers.get("Authorization") for f in flows if isinstance(f, HTTPFlow) and f.request.headers.get("Authorization")]
    assert "Bearer [rr:api/live]" in placeholders


@pytest.mark.parametrize(
    "values, reason",
    [
        ([b"Basic !!!notbase64"], "malformed caller credential"),
        ([b"Basic " + base64.b64encode(b"nocolon")], "malformed caller credential"),
        ([b"Basic " + base64.b64encode(b"u:\xff\xfe")], "malformed caller credential"),
        ([b"Bearer " + b"a" * 65536], "malformed caller credential"),
        ([b"Bearer KEY_main", b"Bearer KEY_ci"], "conflicting caller credentials"),
        ([b"Bearer \xff\xfe"], "caller credential matches no proxy credential"),
    ],
    ids=["bad-base64", "no-colon", "non-utf8-pair", "64kb", "differing-copies", "non-utf8-token"],
)
def test_malformed_proxy_authorization_on_connect(proxy, raw, values, reason):
    before = raw.accepted()
    ctx = ssl.create_default_context(cafile=str(proxy.ca))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        head = f"CONNECT 127.0.0.1:{raw.port} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
        head += b"".join(b"Proxy-Authorization: " + v + b"\r\n" for v in values) + b"\r\n"
        s.sendall(head)
        resp = http.client.HTTPResponse(s, method="CONNECT")
        resp.begin()
        assert resp.status == 200
        with ctx.wrap_socket(s, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            inner = http.client.HTTPResponse(tls)
            inner.begin()
            body = json.loads(inner.read())
    assert inner.status == 401
    assert body["error"]["code"] == "unauthenticated" and body["error"]["message"].startswith(reason)
    assert raw.accepted() - before == 0
