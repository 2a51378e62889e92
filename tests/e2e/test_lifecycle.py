"""Hot reload, a bad configuration that never replaces the running one, WebSocket
upgrades governed like any request, fail-closed internals, and the audit trail."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.server import serve
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from sqlalchemy import text

from rr_addon.store.db import make_engine
from rr_addon.testing.home import database_url, prepare_home, rr_cli
from rr_addon.testing.proxy import ProxyProcess
from rr_addon.testing.wait import eventually

POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials: [{{name: live, kind: bearer, secret: sk_life_SECRET}}]
  - name: ws
    hosts: ["127.0.0.1:{ws_port}"]
    allow_private_addresses: true
    credentials: [{{name: live, kind: api_key, header: X-WS-Key, secret: ws_SECRET}}]
proxies:
  - name: agent
    targets: [{{target: api}}, {{target: ws}}]
    credentials:
      - {{name: a, auth: api_key, secret: KEY_a}}
{extra}
"""
FAULTY_ADDON = Path(__file__).with_name("faulty_addon.py")


class WsUpstream:
    """A TLS WebSocket echo server that records the upgrade request headers."""

    def __init__(self, pki):
        self.headers: list[dict] = []
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(pki.server_cert, pki.server_key)
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _handler(self, ws):
        self.headers.append(dict(ws.request.headers.raw_items()))
        async for message in ws:
            await ws.send(f"echo:{message}")

    async def _start(self):
        self.server = await serve(self._handler, "127.0.0.1", 0, ssl=self.ctx)
        self.port = self.server.sockets[0].getsockname()[1]

    def __enter__(self):
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _stop(self):
        self.server.close()
        await self.server.wait_closed()

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def ws_upstream(pki):
    with WsUpstream(pki) as w:
        yield w


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, upstream, pki, ws_upstream):
    home = tmp_path_factory.mktemp("rr-life")
    prepare_home(home, POLICY.format(port=upstream.port, ws_port=ws_upstream.port, extra=""))
    args = ["-s", str(FAULTY_ADDON), "--set", f"rr_audit_file={home / 'audit.jsonl'}"]
    with ProxyProcess(home, upstream_ca=pki.ca_cert, args=args) as p:
        p.policy_args = dict(port=upstream.port, ws_port=ws_upstream.port)
        yield p


def get(proxy, key, url, **kw):
    verify = ssl.create_default_context(cafile=str(proxy.ca))
    with httpx.Client(proxy=proxy.url("agent", key), verify=verify, timeout=10) as c:
        return c.get(url, **kw)


def test_hot_reload_without_a_restart(proxy, upstream):
    """The running process takes the applied version by itself (how fast: scripts/bench*)."""
    url = f"https://127.0.0.1:{upstream.port}/anything/reload"
    assert get(proxy, "KEY_b", url).status_code == 401
    pid = proxy.proc.pid
    policy = POLICY.format(**proxy.policy_args, extra="      - {name: b, auth: api_key, secret: KEY_b}")
    (proxy.home / "v2.yaml").write_text(policy)
    rr_cli(proxy.home, "apply", "-f", str(proxy.home / "v2.yaml"))
    eventually(lambda: get(proxy, "KEY_b", url).status_code == 200, what=lambda: proxy.log_text()[-2000:])
    proxy.wait_for_log("rr now enforces configuration version 2")
    assert proxy.proc.pid == pid and proxy.proc.poll() is None  # the same process, still serving


def test_bad_configuration_never_replaces_the_running_one(proxy, upstream):
    url = f"https://127.0.0.1:{upstream.port}/anything/bad"
    engine = make_engine(database_url(proxy.home) or f"sqlite:///{proxy.home / 'rr.db'}")
    try:
        with engine.begin() as db:
            version = db.execute(text("SELECT version FROM rr_config_state")).scalar_one()
            spec = db.execute(text("SELECT spec FROM rr_target WHERE name = 'api'")).scalar_one()
            spec = json.loads(spec) if isinstance(spec, str) else spec
            broken = spec | {"hosts": "not-a-list", "from_the_future": True}
            db.execute(text("UPDATE rr_target SET spec = :s WHERE name = 'api'"), {"s": json.dumps(broken)})
            db.execute(text("UPDATE rr_config_state SET version = version + 1"))
        proxy.wait_for_log(f"configuration version {version + 1} failed to load, still enforcing version {version}")
        assert get(proxy, "KEY_a", url).status_code == 200  # still serving the last good configuration
        # an operator repairs it: the fixed version is picked up
        with engine.begin() as db:
            db.execute(text("UPDATE rr_target SET spec = :s WHERE name = 'api'"), {"s": json.dumps(spec)})
            db.execute(text("UPDATE rr_config_state SET version = version + 1"))
    finally:
        engine.dispose()
    proxy.wait_for_log(f"rr now enforces configuration version {version + 2}")
    assert get(proxy, "KEY_a", url).status_code == 200


def test_websocket_upgrade_is_governed(proxy, ws_upstream):
    ctx = ssl.create_default_context(cafile=str(proxy.ca))
    url = f"wss://127.0.0.1:{ws_upstream.port}/chat"
    with pytest.raises(InvalidStatus) as e:
        ws_connect(url, proxy=proxy.url("agent", "wrong"), ssl=ctx, open_timeout=10)
    assert e.value.response.status_code == 401
    assert ws_upstream.headers == []
    with ws_connect(url, proxy=proxy.url("agent", "KEY_a"), ssl=ctx, open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "echo:hello"
    (headers,) = ws_upstream.headers
    assert headers["X-WS-Key"] == "ws_SECRET"
    assert "Proxy-Authorization" not in headers


@pytest.mark.parametrize("phase", ["requestheaders", "response"])
def test_internal_error_fails_closed(proxy, upstream, phase):
    marker = uuid.uuid4().hex
    before = len([r for r in upstream.received if marker in r.path])
    r = get(proxy, "KEY_a", f"https://127.0.0.1:{upstream.port}/anything/{marker}", headers={"x-test-break-rr": phase})
    assert r.status_code == 500
    body = r.json()["error"]
    assert body["code"] == "internal-error" and body["message"] == "internal error in rr"
    assert r.headers["rr-proxy-code"] == "internal-error"
    forwarded = len([x for x in upstream.received if marker in x.path]) - before
    assert forwarded == (0 if phase == "requestheaders" else 1)  # a broken response is never passed on
    proxy.wait_for_log(f"rr internal error in {phase} hook, request {body['request_id']}")
    assert "sk_life_SECRET" not in r.text
    # and the proxy keeps serving
    assert get(proxy, "KEY_a", f"https://127.0.0.1:{upstream.port}/anything/after").status_code == 200


def test_one_audit_record_per_request(proxy, upstream):
    ids = []
    for key in ("KEY_a", "wrong", "KEY_a"):
        r = get(proxy, key, f"https://127.0.0.1:{upstream.port}/anything/audit?secret=value")
        ids.append(r.headers["rr-request-id"])
    audit = proxy.home / "audit.jsonl"

    def audited():
        nonlocal records, by_id
        records = [json.loads(line) for line in audit.read_text().splitlines()]
        by_id = {r["request_id"]: r for r in records if r["request_id"] in ids}
        return len(by_id) == 3

    records, by_id = [], {}
    eventually(audited, what="three audit records")
    assert [by_id[i]["result"] for i in ids] == ["allow", "deny", "allow"]
    assert [by_id[i]["status"] for i in ids] == [200, 401, 200]
    assert by_id[ids[1]]["code"] == "unauthenticated" and by_id[ids[1]]["reason"] == "caller credential matches no proxy credential"
    rec = by_id[ids[0]]
    assert (rec["proxy"], rec["credential"], rec["target"], rec["target_credential"], rec["channel"]) == ("agent", "a", "api", "live", "connect")
    assert rec["path"] == "/anything/audit" and rec["bytes_out"] > 0 and rec["latency_ms"] > 0
    assert len([r for r in records if r["request_id"] in ids]) == 3  # exactly one each
    text = audit.read_text()
    for secret in ("sk_life_SECRET", "KEY_a", "secret=value"):
        assert secret not in text


def test_a_quiet_websocket_outlives_the_idle_and_first_byte_timeouts(proxy, ws_upstream, pki):
    """Timeouts watch an exchange until its response; an upgraded WebSocket is not cut
    for being quiet (mitmproxy's tcp_timeout, 600 s, still closes dead connections)."""
    args = ["--set", "rr_idle_timeout=1", "--set", "rr_first_byte_timeout=1"]
    with ProxyProcess(proxy.home, upstream_ca=pki.ca_cert, args=args, name="quiet") as p:
        ctx = ssl.create_default_context(cafile=str(p.ca))
        with ws_connect(f"wss://127.0.0.1:{ws_upstream.port}/chat", proxy=p.url("agent", "KEY_a"), ssl=ctx, open_timeout=10) as ws:
            ws.send("one")
            assert ws.recv(timeout=10) == "echo:one"
            time.sleep(2)  # quiet for twice both timeouts: the behaviour under test
            ws.send("two")
            assert ws.recv(timeout=10) == "echo:two"
