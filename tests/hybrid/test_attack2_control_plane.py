"""Attacker's pass on the control plane's newer endpoints (--server forms of
rr token / secret status / explain / usage reset, and the data-plane
endpoints): malformed bodies get a clear 400, attribution keeps one '/', and
names echoed to a terminal are literal text."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from rr_addon import settings
from rr_addon.crypto import Keyring, master_keys
from rr_addon.hybrid import bundle as bundles
from rr_addon.hybrid import server
from rr_addon.testing.home import prepare_home, rr_cli
from rr_addon.testing.hybrid import served_control_plane

SECRET = "sk_attack2_UPSTREAM_9f3e"
CALLER_KEY = "caller-key-attack2-77"
POLICY = f"""
targets:
  - name: api
    hosts: [api.example.com]
    credentials: [{{name: live, kind: bearer, secret: {SECRET}}}]
  - name: filed
    hosts: [files.example.com]
    credentials: [{{name: w, kind: bearer, secret: {{file: SECRET_FILE, watch: true}}}}]
proxies:
  - name: agent
    targets: [{{target: api}}]
    credentials: [{{name: a, auth: api_key, secret: {CALLER_KEY}}}]
"""


@pytest.fixture(scope="module")
def cp(tmp_path_factory):
    secret_file = tmp_path_factory.mktemp("secret") / "watched"
    secret_file.write_text("sk_attack2_WATCHED_1c2d\n")
    home = prepare_home(tmp_path_factory.mktemp("cp"), POLICY.replace("SECRET_FILE", str(secret_file)))
    with served_control_plane(home) as (url, engine, admin):
        plane_path = home / "dp.json"
        rr_cli(home, "control-plane", "issue-dataplane", "dp", "--url", url, "-o", str(plane_path))
        yield home, url, engine, admin, tmp_path_factory.mktemp("operator"), bundles.read(plane_path)


def as_admin(cp) -> httpx.Client:
    home, url, _, admin, _, b = cp
    token = json.loads(admin.read_text())["token"]
    return httpx.Client(base_url=url, verify=b.ssl_context(), timeout=20, trust_env=False, headers={"Authorization": f"Bearer {token}"})


def as_dataplane(cp) -> httpx.Client:
    _, url, _, _, _, b = cp
    return httpx.Client(base_url=url, verify=b.ssl_context(), timeout=20, trust_env=False)


NOT_OBJECTS = [b"[1]", b'"text"', b"7"]


@pytest.mark.parametrize("path", ["token-mint", "token-revoke", "explain", "usage-reset"])
def test_admin_body_that_is_not_an_object_is_a_clear_400(cp, path):
    with as_admin(cp) as c:
        for body in NOT_OBJECTS:
            r = c.post(f"/v1/admin/{path}", content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 400, (path, body, r.status_code, r.text)


def test_explain_claims_that_are_not_an_object_is_a_clear_400(cp):
    with as_admin(cp) as c:
        r = c.post("/v1/admin/explain", json={"method": "GET", "url": "https://api.example.com/v1", "credential": "agent/a", "claims": ["sub"]})
    assert r.status_code == 400, (r.status_code, r.text)


@pytest.mark.parametrize("path", ["heartbeat", "usage", "audit", "approvals"])
def test_data_plane_body_that_is_not_an_object_is_a_clear_400(cp, path):
    with as_dataplane(cp) as c:
        for body in NOT_OBJECTS:
            r = c.post(f"/v1/{path}", content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 400, (path, body, r.status_code, r.text)


def test_deeply_nested_json_is_a_clear_400(cp):
    deep = b"[" * 100_000 + b"]" * 100_000  # 200 KB, far under MAX_BODY
    with as_admin(cp) as c:
        r = c.post("/v1/admin/token-mint", content=deep)
        assert r.status_code == 400, (r.status_code, r.text)
    with as_dataplane(cp) as c:
        r = c.post("/v1/heartbeat", content=deep)
        assert r.status_code == 400, (r.status_code, r.text)


def test_a_hold_instance_with_a_slash_cannot_read_as_another_plane(cp):
    """Audit, usage and heartbeats name a record NAME/instance with one '/' (server._plane_id);
    a hold kept the instance as sent, so `dp` could file holds as `dp/other-plane/host`."""
    from rr_addon.store import approvals as approvals_store

    _, _, engine, _, _, _ = cp
    hold = {"request_id": "attack2-hold-1", "proxy": "agent", "credential": "a", "target": "api", "target_credential": "live",
            "method": "POST", "url": "https://api.example.com/v1/refunds", "scope": "target", "rule": "r", "body_preview": "{}"}
    with as_dataplane(cp) as c:
        r = c.post("/v1/approvals", json={"hold": hold, "timeout": 60, "instance": "prod-eu/host-1"})
    assert r.status_code == 200, r.text
    assert approvals_store.one(engine, "attack2-hold-1")["dataplane"].count("/") == 1


def test_token_list_shows_a_note_as_literal_text(cp):
    """A note is the minting admin's free text; `rr token list` (local or --server) must
    neither crash on rich markup in it nor pass terminal escapes to the reader."""
    home, url, _, admin, work, _ = cp
    note = "[/evil] \x1b]0;owned\x07 [link=https://127.0.0.1/]x[/link]"
    rr_cli(work, "token", "mint", "--proxy", "agent", "--credential", "a", "--ttl", "1h", "--note", note,
           "--server", url, "--admin", str(admin), env={"RR_DATABASE_URL": ""})
    r = rr_cli(work, "token", "list", "--server", url, "--admin", str(admin), env={"RR_DATABASE_URL": ""}, check=False)
    assert r.exit_code == 0, r.output
    assert "\x1b]0;owned" not in r.output
    assert "[/evil]" in r.output



def test_secret_status_survives_what_one_data_plane_reports(cp):
    """A data plane's heartbeat says whether it reads each watched secret; `rr secret status`
    (local or --server) indexes a dict with `readable` and subtracts `rotated_at`, so one
    data plane reporting another type made the command fail for every operator."""
    home, url, _, admin, work, _ = cp
    report = {"secrets": {"filed/w": {"readable": "maybe", "rotated_at": "soon", "error": None}}}
    with as_dataplane(cp) as c:
        r = c.post("/v1/heartbeat", json={"id": "host-1", "stats": report})
    assert r.status_code == 200, r.text
    r = rr_cli(work, "secret", "status", "--server", url, "--admin", str(admin), env={"RR_DATABASE_URL": ""}, check=False)
    assert r.exit_code == 0, (r.output, r.exception)
    assert "filed/w" in r.output


def test_a_data_plane_cannot_zero_the_usage_another_reports_for_its_shared_redis(cp):
    """Data planes sharing one Redis report scope redis:<sha256 of its URL without password>[:16]:
    a hash any data plane can compute for a guessable URL. Last report wins per (scope, key),
    whoever sends it, so a data plane that does not use that Redis overwrites what the ones
    using it counted (here: to 0), and the control plane's `rr usage` shows that."""
    import hashlib

    from rr_addon.hybrid import registry

    home, url, engine, _, _, _ = cp
    honest = home / "honest.json"
    rr_cli(home, "control-plane", "issue-dataplane", "honest", "--url", url, "-o", str(honest))
    scope = "redis:" + hashlib.sha256(b"redis://redis:6379/0").hexdigest()[:16]
    key = "usage:agent:a:day-20991231"
    with httpx.Client(base_url=url, verify=bundles.read(honest).ssl_context(), timeout=20, trust_env=False) as c:
        assert c.post("/v1/usage", json={"id": "h1", "scope": scope, "counters": {key: [7, 4102444800]}}).status_code == 200
    with as_dataplane(cp) as c:  # data plane `dp`, not on that Redis
        c.post("/v1/usage", json={"id": "x", "scope": scope, "counters": {key: [0, 4102444800]}})
    _, by_scope = registry.reported_counts(engine, 0)
    assert by_scope.get(scope, {}).get(key) == 7, by_scope.get(scope)


def test_an_anonymous_connection_cannot_hold_a_slot_past_the_handshake_timeout(cp, monkeypatch):
    """Connecting is free to anyone who reaches the port, and slots are capped
    (MAX_CONNECTIONS, shared with data planes and admins). The TLS handshake is bounded
    (HANDSHAKE_TIMEOUT), but after it a client with no certificate and no token that sends
    nothing (or one byte a minute) keeps its slot for LONG_POLL_MAX + 30 s per read: 1024
    such connections lock every data plane out of heartbeats and configuration."""
    import socket
    import ssl

    _, _, engine, _, _, b = cp
    monkeypatch.setattr(server, "HANDSHAKE_TIMEOUT", 1.0)
    plane = server.ControlPlane(engine, Keyring(master_keys(settings.home())), interval=0.1)
    srv = server.Server(("127.0.0.1", 0), plane, server.server_context(plane.keys, ["127.0.0.1"]), max_connections=4)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        ctx = ssl.create_default_context(cadata=b.ca.decode())
        raw = socket.create_connection(srv.server_address)
        tls = ctx.wrap_socket(raw, server_hostname="127.0.0.1")  # handshake done, no certificate
        tls.sendall(b"GET /v1/admin/status HTTP/1.1\r\n")  # and then nothing more
        tls.settimeout(20)  # far beyond the 1 s any unauthenticated phase should get
        try:
            closed = tls.recv(1) == b""
        except TimeoutError:
            closed = False
        except (ssl.SSLError, ConnectionResetError):
            closed = True
        tls.close()
        assert closed, "an anonymous, silent connection still held its slot 20 s after its handshake"
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_negative_audit_limit_is_a_clear_400_not_the_whole_table(cp):
    """SQLite reads LIMIT -1 as no limit: `?limit=-1` handed over every record at once."""
    with as_admin(cp) as c:
        r = c.get("/v1/admin/audit", params={"limit": "-1"})
    assert r.status_code == 400 and "limit must be 0 or more" in r.json()["error"], r.text


def test_remote_explain_notes_reach_the_terminal_as_text(monkeypatch, capsys):
    """The notes of `rr explain --server` may quote a token's claims: control characters in
    them are shown escaped, not sent to the operator's terminal."""
    import contextlib

    from rr_addon.cli import remote

    monkeypatch.setattr(remote, "_client", lambda server, admin: contextlib.nullcontext(None))
    monkeypatch.setattr(remote, "_call", lambda client, method, path, **kw: {"notes": ["sub \x1b]0;owned\x07 \x1b[2J"], "tree": "", "exit": 0})
    remote.explain("https://cp.test", None, "GET", "https://api.test/", [], None, None, None, {})
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "owned" in out


def test_a_field_of_the_wrong_shape_is_a_clear_400(cp):
    with as_dataplane(cp) as c:
        r = c.post("/v1/usage", json={"counters": ["not", "a", "map"]})
    assert r.status_code == 400 and r.json()["error"].startswith("bad request: AttributeError"), r.text
