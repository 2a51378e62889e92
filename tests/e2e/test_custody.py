"""The custody guarantees of docs/security.md against a dishonest caller, a mitmweb viewer and another addon:
the upstream receives the request rr decided on, and the secret goes to the
target host only. Each case failed before the custody work (issue 13)."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
import threading
import uuid

import httpx
import pytest

from rr_addon.testing.home import prepare_home, rr_cli
from rr_addon.testing.mitmweb import web_api
from rr_addon.testing.proxy import ProxyProcess
from rr_addon.testing.upstream import RawListener
from rr_addon.testing.wait import eventually

from pathlib import Path

SECRET = "sk_custody_SECRET_4242"
ADDON = Path(__file__).with_name("custody_addon.py")
POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}", "localhost:{port}"]
    allow_private_addresses: true
    credentials: [{{name: live, kind: bearer, secret: {secret}}}]
  - name: cgnat
    hosts: ["cgnat.test", "sitelocal.test", "nat64.test", "sixtofour.test", "mixed.test", "rebind.test", "nowhere.test"]
    credentials: [{{name: live, kind: bearer, secret: {secret}}}]
proxies:
  - name: agent
    targets: [{{target: api}}, {{target: cgnat}}]
    rules:
      - {{name: model, effect: deny, methods: [POST], body: [{{json_path: "$.model", value: "^forbidden$"}}]}}
    credentials: [{{name: a, auth: api_key, secret: KEY_c}}]
"""
DNS = {
    "cgnat.test": ["100.64.7.7"],
    "sitelocal.test": ["fec0::7"],
    "nat64.test": ["64:ff9b::a00:7"],
    "sixtofour.test": ["2002:a00:7::1"],
    "mixed.test": ["8.8.8.8", "10.0.0.7"],
    "rebind.test": {"fail_first": "10.0.0.7"},
}


class Sink(RawListener):
    """Counts connections that a faulty rr would have sent to a non-loopback address."""

    count = 0

    def one(self, conn):
        self.count += 1
        conn.close()


@pytest.fixture(scope="module")
def sink():
    s = Sink()
    yield s
    s.sock.close()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, upstream, pki, sink):
    home = tmp_path_factory.mktemp("rr-custody")
    prepare_home(home, POLICY.format(port=upstream.port, secret=SECRET))
    args = ["-s", str(ADDON), "--set", "stream_large_bodies=1k", "--set", "rr_inspect_limit=65536"]
    env = {"RR_TEST_DNS": json.dumps(DNS), "RR_TEST_SINK": str(sink.port)}
    with ProxyProcess(home, upstream_ca=pki.ca_cert, args=args, env=env) as p:
        p.upstream_port = upstream.port
        yield p


def forwarded(upstream, marker):
    return [r for r in upstream.received if r.header("x-marker") == marker]


def tunnel(proxy, connect_host: str, sni: str | None):
    """A TLS connection to rr through CONNECT, authenticated on the CONNECT."""
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    s.sendall(f"CONNECT {connect_host} HTTP/1.1\r\nHost: {connect_host}\r\nProxy-Authorization: Bearer KEY_c\r\n\r\n".encode())
    resp = http.client.HTTPResponse(s, method="CONNECT")
    resp.begin()
    assert resp.status == 200
    ctx = ssl.create_default_context(cafile=str(proxy.ca))
    ctx.check_hostname = False  # the test names hosts rr's certificate does not cover on purpose
    return ctx.wrap_socket(s, server_hostname=sni)


def send(tls, head: str, body: bytes = b"") -> tuple[int, dict]:
    tls.sendall(head.encode("latin-1") + b"\r\n" + body)
    resp = http.client.HTTPResponse(tls)
    resp.begin()
    data = resp.read()
    return resp.status, json.loads(data) if data else {}


# ---------------------------------------------------------------------------- the secret goes to the target host only


@pytest.mark.parametrize(
    "request_line, host, sni, reason",
    [
        ("GET /anything/h HTTP/1.1", "evil.example", "127.0.0.1", "Host header names another host than the request's target"),
        ("GET /anything/h HTTP/1.1", "127.0.0.1:1", "127.0.0.1", "Host header names another host than the request's target"),
        ("GET https://evil.example/anything/h HTTP/1.1", "127.0.0.1:{port}", "127.0.0.1", "request authority (absolute-form or :authority) names another host than the request's target"),
        ("GET /anything/h HTTP/1.1", "127.0.0.1:{port}", "evil.example", "TLS server name (SNI) names another host than the request's target"),
    ],
)
def test_another_host_named_in_the_request_is_refused(proxy, upstream, request_line, host, sni, reason):
    marker = uuid.uuid4().hex
    with tunnel(proxy, f"127.0.0.1:{proxy.upstream_port}", sni if sni != "127.0.0.1" else None) as tls:
        status, body = send(tls, f"{request_line}\r\nHost: {host.format(port=proxy.upstream_port)}\r\nx-marker: {marker}\r\n")
    assert (status, body["error"]["code"], body["error"]["message"]) == (400, "invalid-request", reason)
    assert forwarded(upstream, marker) == []


def curl_h2(proxy, url: str, *headers: str) -> tuple[int, str, dict]:
    out = subprocess.run(
        ["curl", "-s", "--http2", "--proxy", proxy.url("agent", "KEY_c"), "--cacert", str(proxy.ca), *sum((["-H", h] for h in headers), []), "-w", "\n%{http_code} %{http_version}", url],
        capture_output=True, text=True, timeout=20, check=True,
    ).stdout
    body, _, status = out.rpartition("\n")
    code, version = status.split()
    return int(code), version, json.loads(body) if body else {}


def test_http2_authority_naming_another_host_is_refused(proxy, upstream):
    marker = uuid.uuid4().hex
    url = f"https://127.0.0.1:{proxy.upstream_port}/anything/h2"
    code, version, body = curl_h2(proxy, url, "Host: evil.example", f"x-marker: {marker}")
    assert (code, version, body["error"]["code"]) == (400, "2", "invalid-request")
    assert body["error"]["message"].startswith("request authority (absolute-form or :authority)")
    assert forwarded(upstream, marker) == []
    code, version, _ = curl_h2(proxy, url, f"x-marker: {marker}ok")
    assert (code, version) == (200, "2") and len(forwarded(upstream, marker + "ok")) == 1


def test_upstream_sni_is_the_target_host_not_the_callers(proxy, upstream):
    marker = uuid.uuid4().hex
    before = len(upstream.server_names)
    with tunnel(proxy, f"localhost:{proxy.upstream_port}", "LocalHost") as tls:
        status, body = send(tls, f"GET /anything/sni HTTP/1.1\r\nHost: localhost:{proxy.upstream_port}\r\nx-marker: {marker}\r\n")
    assert status == 200, body
    (got,) = forwarded(upstream, marker)
    assert got.header("authorization") == f"Bearer {SECRET}"
    assert upstream.server_names[before:] == ["localhost"]


# ---------------------------------------------------------------------------- addresses


@pytest.mark.parametrize("host", ["cgnat.test", "sitelocal.test", "nat64.test", "sixtofour.test", "mixed.test"])
def test_addresses_that_are_not_globally_routable_are_refused(proxy, sink, host):
    verify = ssl.create_default_context(cafile=str(proxy.ca))
    with httpx.Client(proxy=proxy.url("agent", "KEY_c"), verify=verify, timeout=10) as c:
        r = c.get(f"https://{host}/x")
    err = r.json()["error"]
    assert (r.status_code, err["code"]) == (403, "access-denied")
    assert err["message"] == f"target host resolves to a private address (target rule allow_private_addresses): {host}"
    assert sink.count == 0
    assert DNS[host][-1] in proxy.log_text()  # the operator sees the address, the caller does not


@pytest.mark.parametrize("host", ["rebind.test", "nowhere.test"])
def test_a_failed_lookup_refuses_the_connection(proxy, sink, host):
    verify = ssl.create_default_context(cafile=str(proxy.ca))
    with httpx.Client(proxy=proxy.url("agent", "KEY_c"), verify=verify, timeout=10) as c:
        r = c.get(f"https://{host}/x")
    err = r.json()["error"]
    assert (r.status_code, err["code"], err["message"]) == (502, "upstream-unavailable", f"target host name could not be resolved: {host}")
    assert sink.count == 0


# ---------------------------------------------------------------------------- bodies a decision reads


def _chunks(data: bytes, size: int = 700):
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_stream_large_bodies_does_not_skip_body_rules(proxy, upstream, framing):
    """stream_large_bodies=1k is set: a 10 KB body a rule reads is still read whole, then denied."""
    marker = uuid.uuid4().hex
    body = json.dumps({"model": "forbidden", "pad": "x" * 10_000}).encode()
    verify = ssl.create_default_context(cafile=str(proxy.ca))
    with httpx.Client(proxy=proxy.url("agent", "KEY_c"), verify=verify, timeout=10) as c:
        content = body if framing == "content-length" else _chunks(body)
        r = c.post(f"https://127.0.0.1:{proxy.upstream_port}/anything/big", content=content, headers={"x-marker": marker, "content-type": "application/json"})
        allowed = json.dumps({"model": "fine", "pad": "y" * 10_000}).encode()
        ok = c.post(f"https://127.0.0.1:{proxy.upstream_port}/anything/big", content=allowed if framing == "content-length" else _chunks(allowed), headers={"x-marker": marker + "ok", "content-type": "application/json"})
    assert (r.status_code, r.json()["error"]["rule"] if "rule" in r.json()["error"] else r.json()["error"]["message"]) != (200, None)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "access-denied"), r.text
    assert forwarded(upstream, marker) == []
    assert ok.status_code == 200, ok.text
    (got,) = forwarded(upstream, marker + "ok")
    assert got.body == allowed


def test_a_chunked_body_over_the_inspection_limit_is_refused_as_it_arrives(proxy, upstream):
    marker = uuid.uuid4().hex
    body = json.dumps({"model": "fine", "pad": "z" * 100_000}).encode()
    verify = ssl.create_default_context(cafile=str(proxy.ca))
    with httpx.Client(proxy=proxy.url("agent", "KEY_c"), verify=verify, timeout=10) as c:
        r = c.post(f"https://127.0.0.1:{proxy.upstream_port}/anything/huge", content=_chunks(body, 4096), headers={"x-marker": marker, "content-type": "application/json"})
    assert (r.status_code, r.json()["error"]["code"]) == (413, "payload-too-large")
    assert forwarded(upstream, marker) == []


# ---------------------------------------------------------------------------- another addon changes the request after rr


@pytest.mark.parametrize("edit", ["path", "host", "body", "header"])
def test_a_request_changed_by_another_addon_is_refused(proxy, upstream, edit):
    marker = uuid.uuid4().hex
    verify = ssl.create_default_context(cafile=str(proxy.ca))
    with httpx.Client(proxy=proxy.url("agent", "KEY_c"), verify=verify, timeout=10) as c:
        r = c.post(f"https://127.0.0.1:{proxy.upstream_port}/anything/x", json={"model": "fine"}, headers={"x-marker": marker, "x-test-edit": edit})
    err = r.json()["error"]
    assert (r.status_code, err["code"], err["message"]) == (403, "access-denied", "request changed after rr decided it")
    assert forwarded(upstream, marker) == []
    assert not any(rq.path.startswith("/anything/edited") for rq in upstream.received)
    assert audited(proxy, err["request_id"], 1) == [(403, "access-denied")]
    assert f"rr refused request {err['request_id']} below the hooks: request changed after rr decided it" in proxy.log_text()


# ---------------------------------------------------------------------------- a mitmweb viewer edits an intercepted flow



@pytest.fixture(scope="module")
def web(tmp_path_factory, upstream, pki):
    home = tmp_path_factory.mktemp("rr-custody-web")
    prepare_home(home, POLICY.format(port=upstream.port, secret=SECRET))
    args = ["--set", "web_open_browser=false", "--set", "intercept=~q & ~h x-intercept"]
    with ProxyProcess(home, upstream_ca=pki.ca_cert, web=True, direct=True, args=args) as p:
        p.upstream_port = upstream.port
        yield p


def _intercepted(api: httpx.Client, marker: str) -> dict:
    def find() -> dict | None:
        for f in api.get("/flows").json():
            headers = dict((k.lower(), v) for k, v in f["request"]["headers"])
            if headers.get("x-marker") == marker and f.get("intercepted"):
                return f
        return None

    return eventually(find, what="the flow intercepted")


@pytest.mark.parametrize(
    "edit",
    [
        None,  # resumed unchanged: goes out with the secret
        {"path": "/anything/edited-in-mitmweb"},
        {"method": "DELETE"},
        {"content": '{"model": "forbidden"}'},
        {"headers": [["host", "evil.example"], ["x-marker", "{marker}"], ["x-intercept", "1"]]},
    ],
)
def test_a_flow_edited_in_mitmweb_is_refused(web, upstream, edit):
    marker = uuid.uuid4().hex
    result: dict = {}

    def client():
        verify = ssl.create_default_context(cafile=str(web.ca))
        with httpx.Client(proxy=web.url("agent", "KEY_c"), verify=verify, timeout=30) as c:
            result["r"] = c.post(f"https://127.0.0.1:{web.upstream_port}/anything/w", json={"model": "fine"}, headers={"x-marker": marker, "x-intercept": "1"})

    t = threading.Thread(target=client)
    t.start()
    with web_api(web) as api:
        flow = _intercepted(api, marker)
        if edit is not None:
            edit = json.loads(json.dumps(edit).replace("{marker}", marker))
            assert api.put(f"/flows/{flow['id']}", json={"request": edit}).status_code == 200
        assert api.post(f"/flows/{flow['id']}/resume").status_code == 200
    t.join(30)
    r = result["r"]
    if edit is None:
        assert r.status_code == 200
        (got,) = forwarded(upstream, marker)
        assert got.header("authorization") == f"Bearer {SECRET}"
        return
    err = r.json()["error"]
    assert (r.status_code, err["code"], err["message"]) == (403, "access-denied", "request changed after rr decided it")
    assert forwarded(upstream, marker) == []


# ---------------------------------------------------------------------------- property: random mutations through a real rr

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

_EVIL = ["evil.example", "127.0.0.1:1", "localhost", "127.0.0.2", "evil.example:{port}", "127.0.0.1:{port}@evil.example", "127.0.0.1:{port}.evil.example", ""]
_SEGMENTS = ["anything", "a", "..", ".", "%2e%2e", "x;y", "%2F", "b%3Bc", "caf%C3%A9", "", "~u"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["GET", "POST", "DELETE"]),
    form=st.sampled_from(["origin", "absolute-target", "absolute-other"]),
    host=st.sampled_from(["right", "right-no-port", "missing", "twice", *_EVIL]),
    sni=st.sampled_from([None, "localhost", "evil.example"]),
    segments=st.lists(st.sampled_from(_SEGMENTS), min_size=1, max_size=4),
    query=st.sampled_from(["", "?a=1", "?a=1&a=2", "?key=x"]),
    override=st.sampled_from([None, "DELETE", "GET"]),
)
def test_property_the_secret_only_goes_with_the_decided_request_to_the_target(proxy, upstream, method, form, host, sni, segments, query, override):
    port = proxy.upstream_port
    marker = uuid.uuid4().hex
    path = "/anything/" + "/".join(segments) + query
    target = {"origin": path, "absolute-target": f"https://127.0.0.1:{port}{path}", "absolute-other": f"https://evil.example{path}"}[form]
    lines = [f"{method} {target} HTTP/1.1"]
    right = f"127.0.0.1:{port}"
    if host in ("right", "twice"):
        lines.append(f"Host: {right}")
    if host == "twice":
        lines.append("Host: evil.example")
    elif host == "right-no-port":
        lines.append("Host: 127.0.0.1")
    elif host not in ("right", "missing"):
        lines.append(f"Host: {host.format(port=port)}")
    lines += [f"x-marker: {marker}", "content-length: 2", "content-type: application/json"]
    if override:
        lines.append(f"X-HTTP-Method-Override: {override}")
    try:
        with tunnel(proxy, right, sni) as tls:
            tls.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + b"{}")
            resp = http.client.HTTPResponse(tls)
            resp.begin()
            resp.read()
    except (ConnectionError, http.client.HTTPException, ssl.SSLError, TimeoutError):
        pass  # refused at the protocol level: nothing to hold rr to but what the upstream got
    for got in forwarded(upstream, marker):
        # whatever was sent, the upstream saw the target's authority and the decided method
        assert got.header("host") in (right, "127.0.0.1"), got.headers  # a missing Host is the target's
        assert got.path.startswith("/"), got.path  # never absolute-form naming another host
        assert got.method == method
        assert got.header("authorization") == f"Bearer {SECRET}"
        if form == "absolute-other" or (host not in ("right", "right-no-port", "missing")) or sni == "evil.example":
            raise AssertionError(f"a request naming another host reached the upstream: {lines}")
    assert upstream.server_names.count("evil.example") == 0


def audited(proxy, request_id: str, n: int) -> list[tuple[int, str | None]]:
    """The (status, code) of the audit records of `request_id`, once there are `n` (written in the background)."""
    def mine() -> list[tuple[int, str | None]]:
        records = [json.loads(line) for line in rr_cli(proxy.home, "audit", "--json").output.splitlines() if line.strip()]
        return sorted((r["status"], r["code"]) for r in records if r["request_id"] == request_id)

    try:
        return eventually(lambda: len(m := mine()) >= n and (m,), what=f"{n} audit records")[0]
    except TimeoutError:
        return mine()  # the caller's assertion shows what there is


def _finished(api: httpx.Client, flow_id: str, status: int) -> dict:
    finished = lambda: next((f for f in api.get("/flows").json() if f["id"] == flow_id and f.get("response") and f["response"]["status_code"] == status), None)  # noqa: E731
    return eventually(finished, what=f"flow {flow_id} finished with {status}")


@pytest.mark.parametrize("edit", [None, {"path": "/anything/replayed-edit"}, {"content": '{"model": "forbidden"}'}])
def test_a_flow_replayed_in_mitmweb_is_decided_again(web, upstream, edit):
    """The replay carries only the placeholder and no caller credential (rr removed it),
    so it is decided again and refused: nothing more reaches the upstream."""
    marker = uuid.uuid4().hex
    verify = ssl.create_default_context(cafile=str(web.ca))
    with httpx.Client(proxy=web.url("agent", "KEY_c"), verify=verify, timeout=30) as c:
        r = c.post(f"https://127.0.0.1:{web.upstream_port}/anything/r", json={"model": "fine"}, headers={"x-marker": marker})
    assert r.status_code == 200 and len(forwarded(upstream, marker)) == 1
    with web_api(web) as api:
        flow_id = r.headers["rr-request-id"]
        if edit is not None:
            assert api.put(f"/flows/{flow_id}", json={"request": edit}).status_code == 200
        assert api.post(f"/flows/{flow_id}/replay").status_code == 200
        replayed = _finished(api, flow_id, 401)
    assert replayed["comment"].startswith("rr deny unauthenticated")
    assert len(forwarded(upstream, marker)) == 1
    assert audited(web, flow_id, 1) == [(200, None)]
    assert audited(web, f"{flow_id}/replay-1", 1) == [(401, "unauthenticated")]  # the replay has its own record
    assert not any(rq.path.startswith("/anything/replayed") for rq in upstream.received)


@pytest.mark.parametrize("size", [10, 20_000])  # the small body is decided at requestheaders, the large one read whole (rule)
def test_expect_100_continue_is_not_taken_for_a_change(proxy, upstream, size):
    """mitmproxy answers `Expect: 100-continue` itself and removes the header after rr decided."""
    marker = uuid.uuid4().hex
    body = json.dumps({"model": "fine", "pad": "p" * size}).encode()
    with tunnel(proxy, f"127.0.0.1:{proxy.upstream_port}", None) as tls:
        head = (
            f"POST /anything/expect HTTP/1.1\r\nHost: 127.0.0.1:{proxy.upstream_port}\r\nx-marker: {marker}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\nexpect: 100-continue\r\n\r\n"
        )
        tls.sendall(head.encode())
        interim = tls.recv(64)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        tls.sendall(body)
        resp = http.client.HTTPResponse(tls)
        resp.begin()
        resp.read()
    assert resp.status == 200
    (got,) = forwarded(upstream, marker)
    assert got.body == body and got.header("expect") is None
