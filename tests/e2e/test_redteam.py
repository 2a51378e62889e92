"""An attacker's pass over request custody: a caller with a valid key and a
mitmweb viewer. Each test is one finding of that pass: it states the safe
behaviour and failed on the code it was written against. Everything runs through a real
`rr run` (or mitmweb with rr loaded) and real clients; upstreams are local.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import uuid

import httpx
import pytest

from rr_addon.testing.home import prepare_home
from rr_addon.testing.mitmweb import web_api
from rr_addon.testing.proxy import ProxyProcess
from rr_addon.testing.certs import make_pki
from rr_addon.testing.upstream import Upstream
from rr_addon.testing.wait import eventually

SECRET = "sk_redteam_SECRET_7171"
POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    rules:
      - {{name: no-deletes, effect: deny, methods: [DELETE]}}
      - {{name: no-admin, effect: deny, path: "^/admin/"}}
      - {{name: no-stream, effect: deny, methods: [POST], body: [{{json_path: "$.stream", value: "^true$"}}]}}
    credentials: [{{name: live, kind: bearer, secret: {secret}}}]
proxies:
  - name: agent
    targets: [{{target: api}}]
    credentials: [{{name: a, auth: api_key, secret: KEY_rt}}]
"""


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, upstream, pki):
    home = tmp_path_factory.mktemp("rr-redteam")
    prepare_home(home, POLICY.format(port=upstream.port, secret=SECRET))
    with ProxyProcess(home, upstream_ca=pki.ca_cert) as p:
        p.upstream_port = upstream.port
        yield p


AUTH = "Proxy-Authorization: Basic " + base64.b64encode(b"agent:KEY_rt").decode()


def forwarded(upstream, marker):
    return [r for r in upstream.received if r.header("x-marker") == marker]


def call(proxy, method, path, **kw):
    verify = ssl.create_default_context(cafile=str(proxy.ca))
    with httpx.Client(proxy=proxy.url("agent", "KEY_rt"), verify=verify, timeout=10) as c:
        return c.request(method, f"https://127.0.0.1:{proxy.upstream_port}{path}", **kw)


def refused_nothing_sent(r, upstream, marker, status, code):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.json()["error"]["code"] == code
    assert forwarded(upstream, marker) == []


# ---------------------------------------------------------------------------- a caller slips past a deny rule


@pytest.mark.parametrize("header", ["X-Original-URL", "X-Rewrite-URL"])
def test_path_override_headers_are_refused(proxy, upstream, header):
    """`X-Original-URL` / `X-Rewrite-URL` make IIS (URL Rewrite), Zend and older Symfony route
    the request to the path they name: rules see `/anything/ok`, the upstream serves `/admin/…`.
    Same class as the method-override headers rr refuses. Safe: 400 invalid-request, nothing forwarded."""
    marker = uuid.uuid4().hex
    r = call(proxy, "GET", "/anything/ok", headers={header: "/admin/users/delete-all", "x-marker": marker})
    refused_nothing_sent(r, upstream, marker, 400, "invalid-request")




@pytest.fixture(scope="module")
def web(tmp_path_factory, upstream, pki):
    home = tmp_path_factory.mktemp("rr-redteam-web")
    prepare_home(home, POLICY.format(port=upstream.port, secret=SECRET))
    with ProxyProcess(home, upstream_ca=pki.ca_cert, web=True, direct=True, args=["--set", "web_open_browser=false"]) as p:
        p.upstream_port = upstream.port
        yield p


def _replay_with_the_tunnel_open(web, upstream, edit):
    """A caller's request through a tunnel it keeps open; a viewer (optionally) edits the
    flow and replays it. (What the upstream received with the caller's marker, the flow's comment.)"""
    marker = uuid.uuid4().hex
    port = web.upstream_port
    s = socket.create_connection(("127.0.0.1", web.port), timeout=10)
    s.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{AUTH}\r\n\r\n".encode())
    resp = http.client.HTTPResponse(s, method="CONNECT")
    resp.begin()
    assert resp.status == 200
    tls = ssl.create_default_context(cafile=str(web.ca)).wrap_socket(s, server_hostname="127.0.0.1")
    try:
        tls.sendall(f"GET /anything/mine HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nx-marker: {marker}\r\n\r\n".encode())
        first = http.client.HTTPResponse(tls)
        first.begin()
        first.read()
        assert first.status == 200 and len(forwarded(upstream, marker)) == 1
        flow_id = first.getheader("rr-request-id")
        api = web_api(web)
        with api:
            if edit is not None:
                edit = json.loads(json.dumps(edit).replace("{marker}", marker).replace("{port}", str(port)))
                assert api.put(f"/flows/{flow_id}", json={"request": edit}).status_code == 200
            assert api.post(f"/flows/{flow_id}/replay").status_code == 200
            comment = ""

            def settled() -> bool:  # the replay is refused, or reaches the upstream
                nonlocal comment
                comment = next(f for f in api.get("/flows").json() if f["id"] == flow_id)["comment"]
                return comment.startswith("rr deny") or len(forwarded(upstream, marker)) >= 2

            eventually(settled, what="the replay refused or forwarded")
    finally:
        tls.close()
    return forwarded(upstream, marker), comment


@pytest.mark.parametrize(
    "edit",
    [
        None,
        {"path": "/anything/viewer-chose-this"},
        {"path": "/anything/viewer-chose-this", "headers": [["host", "127.0.0.1:{port}"], ["x-marker", "{marker}"]]},
    ],
    ids=["replay", "edit-path", "edit-path-drop-placeholder"],
)
def test_a_replay_does_not_borrow_the_callers_open_tunnel(web, upstream, edit):
    """A replay is "decided again from scratch"; rr removed the caller's credential from the
    flow, so the replay should be refused (401). But rr looks the caller's CONNECT credential
    up by the flow's client connection id: while the caller's tunnel is still open, a mitmweb
    viewer's replay — with any edit the viewer likes — is authenticated as that caller and
    stamped to go out with the secret. The web password thus grants every connected caller's
    identity. Today only an accident stops it: `server_connect` looks the destination up by the
    replay's own (copied) client connection id, finds no governed request and refuses the
    connection, so the replay ends 502 upstream-unavailable. That check is skipped when rr runs
    behind an upstream proxy (`server.via`), and is not what the contract promises.
    Safe: a replay never inherits a tunnel credential (401 unauthenticated, nothing sent)."""
    got, comment = _replay_with_the_tunnel_open(web, upstream, edit)
    assert len(got) == 1, [(g.method, g.path, g.header("authorization")) for g in got]
    # refused because the replay has no caller credential — not merely because its connection
    # happened to be refused below the decision (see the docstring)
    assert comment.startswith("rr deny unauthenticated"), comment


ONE_TARGET_POLICY = """
targets:
  - name: one
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials: [{{name: live, kind: bearer, secret: {secret}}}]
proxies:
  - name: agent
    targets: [{{target: one}}]
    credentials: [{{name: a, auth: api_key, secret: KEY_rt}}]
"""


# ---------------------------------------------------------------------------- a mitmweb viewer turns verification off


def test_a_viewer_cannot_turn_off_upstream_certificate_checks(tmp_path, pki):
    """The mitmweb REST API lets anyone with the web password change any option
    (`PUT /options`). rr pins `connection_strategy`, but not `ssl_insecure`: a viewer sets it
    and from then on rr sends the secret to any upstream that answers for the target's
    address — with hostile DNS or a network on path, the attacker's — its certificate unchecked.
    Safe: rr keeps upstream certificate verification on (refuses or reverts `ssl_insecure`),
    and a target whose certificate does not verify never receives the secret."""
    untrusted = make_pki(tmp_path / "other-pki")  # a certificate rr's trust store does not know
    with Upstream(untrusted) as impostor:
        home = tmp_path / "home"
        home.mkdir()
        prepare_home(home, ONE_TARGET_POLICY.format(port=impostor.port, secret=SECRET))
        with ProxyProcess(home, upstream_ca=pki.ca_cert, web=True, direct=True, args=["--set", "web_open_browser=false"]) as p:
            verify = ssl.create_default_context(cafile=str(p.ca))

            def get():
                with httpx.Client(proxy=p.url("agent", "KEY_rt"), verify=verify, timeout=10) as c:
                    return c.get(f"https://127.0.0.1:{impostor.port}/anything/x")

            assert get().status_code == 502  # unverifiable: refused, as it should be
            api = web_api(p)
            with api:
                api.put("/options", json={"ssl_insecure": True})
            r = get()
        got = [g.header("authorization") for g in impostor.received]
    assert got == [], got
    assert r.status_code == 502, r.text


def test_a_viewer_cannot_read_the_secret_from_the_debug_log(tmp_path, pki, upstream):
    """docs/security.md: the secret never appears in mitmweb or in logs. A viewer sets
    `proxy_debug` (`PUT /options`); mitmproxy then logs every byte it writes to a connection,
    including the wire request rr built with the secret, and mitmweb serves that log to the
    viewer (`GET /events`) — as it writes it to rr's log. (`--set proxy_debug=true` at start does
    the same for the log.) Safe: rr refuses or reverts `proxy_debug`, or the secret is masked
    in every log record; neither the event log nor the log file ever holds it."""
    home = tmp_path / "home"
    home.mkdir()
    prepare_home(home, ONE_TARGET_POLICY.format(port=upstream.port, secret=SECRET))
    with ProxyProcess(home, upstream_ca=pki.ca_cert, web=True, direct=True, args=["--set", "web_open_browser=false"]) as p:
        api = web_api(p)
        with api:
            api.put("/options", json={"proxy_debug": True})
            verify = ssl.create_default_context(cafile=str(p.ca))
            with httpx.Client(proxy=p.url("agent", "KEY_rt"), verify=verify, timeout=10) as c:
                assert c.get(f"https://127.0.0.1:{upstream.port}/anything/debug").status_code == 200
            # the event log is written as the connection is served, up to its end upstream
            served = f"server disconnect 127.0.0.1:{upstream.port}"
            events = eventually(lambda: served in (e := api.get("/events").text) and e, what=f"{served!r} in the event log")
        log = p.log_text()
    assert SECRET not in events
    assert SECRET not in log
