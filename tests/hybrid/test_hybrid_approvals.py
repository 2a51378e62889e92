"""Approvals on a hybrid data plane: a control plane and a data plane as separate
processes with homes of their own (the data plane has no database), a real TLS
upstream. A request an `approve` rule matches is held on the data plane, its
hold recorded at the control plane over the mutual-TLS link, and decided there
(`rr approve` in the control plane's home, or `--server` from an operator's
machine); the data plane forwards or refuses as a single-node rr does."""

from __future__ import annotations

import json
import ssl
import threading
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import MetaData, select

from rr_addon.hybrid import bundle as bundles
from rr_addon.store.db import make_engine
from rr_addon.testing import held as held_requests
from rr_addon.testing.home import database_url, prepare_home, rr_cli
from rr_addon.testing.hybrid import ControlPlaneProcess, dataplane, state
from rr_addon.testing.wait import eventually

pytestmark = pytest.mark.e2e

SECRET = "sk_hyapprove_UPSTREAM_7d2e19"
CALLER_KEY = "KEY_hyapprove_caller_4b81"
POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials: [{{name: live, kind: bearer, secret: {secret}}}]
    rules:
      - name: refunds-need-a-human
        effect: approve
        methods: [POST]
        path: "^/v1/refunds"
        approval: {{timeout: 300}}
      - name: quick-decision
        effect: approve
        path: "^/v1/quick"
        approval: {{timeout: 2}}
proxies:
  - name: agent
    targets: [{{target: api}}]
    credentials: [{{name: bot, auth: api_key, secret: {key}}}]
"""


def Call(dp, method: str, path: str, body: dict | None = None) -> held_requests.Call:
    """A request through the data plane in a thread of its own (it blocks while held)."""
    return held_requests.Call(dp, "agent", CALLER_KEY, method, path, json=body)


@pytest.fixture(scope="module")
def plane(tmp_path_factory, upstream, pki):
    """A control plane and one data plane ("edge"), for the module."""
    root = tmp_path_factory.mktemp("hyapprove")
    home = prepare_home(root / "cp", POLICY.format(port=upstream.port, secret=SECRET, key=CALLER_KEY))
    (home / "policy.yaml").unlink()  # the operator's file, not the control plane's state: the home is searched for secrets below
    with ControlPlaneProcess(home) as cp:
        bundle = root / "edge.rr-bundle.json"
        rr_cli(home, "control-plane", "issue-dataplane", "edge", "--url", cp.url, "-o", str(bundle))
        other = root / "other.rr-bundle.json"
        rr_cli(home, "control-plane", "issue-dataplane", "other", "--url", cp.url, "-o", str(other))
        admin = root / "ops.rr-admin.json"
        rr_cli(home, "control-plane", "issue-admin", "ops", "--url", cp.url, "-o", str(admin))
        with dataplane(root / "edge", bundle, upstream_ca=pki.ca_cert, name="edge") as dp:
            dp.upstream_port = upstream.port
            yield cp, dp, admin, other


def pending(cp) -> list[dict]:
    return json.loads(rr_cli(cp.home, "approvals", "--json").output)


def wait_pending(cp, marker: str) -> dict:
    return eventually(lambda: next((p for p in pending(cp) if marker in p["url"]), None), timeout=30, what=f"a pending approval for {marker} at the control plane")


def forwarded(upstream, marker: str):
    return [r for r in upstream.received if marker in r.path]


def operator(cp, admin: Path, tmp: Path, *args: str, check: bool = True):
    """`rr … --server URL --admin FILE` from a home with no database and no key."""
    work = tmp / "operator"
    work.mkdir(exist_ok=True)
    return rr_cli(work, *args, "--server", cp.url, "--admin", str(admin), env={"RR_DATABASE_URL": ""}, check=check)


def audit_record(cp, request_id: str) -> dict:
    def find():
        for line in rr_cli(cp.home, "audit", "--json", "-n", "200").output.splitlines():
            rec = json.loads(line)
            if rec["request_id"] == request_id:
                return rec
        return None

    return eventually(find, timeout=30, what=f"the audit record of {request_id} at the control plane")


def everything_stored(home: Path) -> bytes:
    """Every file of the control plane's home and every row of its database, as bytes."""
    out = [p.read_bytes() for p in home.rglob("*") if p.is_file()]
    engine = make_engine(database_url(home) or f"sqlite:///{home / 'rr.db'}")
    try:
        meta = MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            for table in meta.sorted_tables:
                out.extend(repr(tuple(r)).encode() for r in conn.execute(select(table)).all())
    finally:
        engine.dispose()
    return b"\n".join(out)


def test_held_on_the_data_plane_approved_on_the_control_plane(plane, upstream):
    cp, dp, _, _ = plane
    marker = uuid.uuid4().hex
    call = Call(dp, "POST", f"/v1/refunds/{marker}?ref={CALLER_KEY}", {"amount": 4200, "note": f"key {CALLER_KEY}", "password": "hunter2-pw"})
    held = wait_pending(cp, marker)
    assert (held["proxy"], held["credential"], held["rule"], held["method"]) == ("agent", "bot", "refunds-need-a-human", "POST")
    assert held["dataplane"].startswith("edge/")  # named after the data plane's certificate
    assert held["url"] == f"https://127.0.0.1:{upstream.port}/v1/refunds/{marker}?ref=****"  # masked on the data plane
    assert '"amount":4200' in held["body_preview"] and CALLER_KEY not in held["body_preview"] and "hunter2-pw" not in held["body_preview"]
    assert forwarded(upstream, marker) == [] and call.thread.is_alive()
    # the control plane never saw the caller key or the upstream secret: not in a file of its home, nor a row of its database
    stored = everything_stored(cp.home)
    assert marker.encode() in stored  # the hold is there
    for secret in (CALLER_KEY, SECRET, "hunter2-pw"):
        assert secret.encode() not in stored, f"{secret} at the control plane"
    done = rr_cli(cp.home, "approve", held["request_id"], "--by", "alice", "--note", "ticket 77")
    assert "approved by alice" in done.output
    r = call.response()
    assert r.status_code == 200, r.text
    (got,) = forwarded(upstream, marker)
    assert got.header("authorization") == f"Bearer {SECRET}"  # injected on the data plane, after approval
    assert json.loads(got.body)["password"] == "hunter2-pw"  # what was held is what went out
    rec = audit_record(cp, held["request_id"])
    assert rec["result"] == "allow" and rec["reason"] == "approved by a person" and rec["dataplane"].startswith("edge/")
    assert {k: rec["approval"][k] for k in ("rule", "state", "by", "note")} == {"rule": "refunds-need-a-human", "state": "approved", "by": "alice", "note": "ticket 77"}
    assert rec["approval"]["at"]
    again = rr_cli(cp.home, "deny", held["request_id"], check=False)
    assert again.exit_code == 1 and "no longer waiting: it was approved by alice" in again.output
    shown = rr_cli(cp.home, "approvals", "show", held["request_id"]).output
    assert "approved by alice" in shown and "ticket 77" in shown and "edge/" in shown


def test_approved_and_denied_through_the_admin_api(plane, upstream, tmp_path):
    cp, dp, admin, _ = plane
    go, stop = uuid.uuid4().hex, uuid.uuid4().hex
    approved = Call(dp, "POST", f"/v1/refunds/{go}", {"amount": 1})
    denied = Call(dp, "POST", f"/v1/refunds/{stop}", {"amount": 2})
    wait_pending(cp, go), wait_pending(cp, stop)
    listed = json.loads(operator(cp, admin, tmp_path, "approvals", "--json").output)
    ids = {m: next(p["request_id"] for p in listed if m in p["url"]) for m in (go, stop)}
    table = operator(cp, admin, tmp_path, "approvals").output
    assert ids[go] in table and "agent/bot" in table
    assert "approved by ops" in operator(cp, admin, tmp_path, "approve", ids[go]).output  # by the admin credential's name
    operator(cp, admin, tmp_path, "deny", ids[stop], "--by", "bob", "--note", "not this one")
    r = approved.response()
    assert r.status_code == 200, r.text
    (got,) = forwarded(upstream, go)
    assert got.header("authorization") == f"Bearer {SECRET}"
    r = denied.response()
    assert (r.status_code, r.json()["error"]["code"]) == (403, "access-denied")
    assert r.json()["error"]["message"].startswith("denied by a person")
    assert forwarded(upstream, stop) == []  # never reached the upstream
    assert audit_record(cp, ids[go])["approval"]["by"] == "ops"
    rec = audit_record(cp, ids[stop])
    assert rec["code"] == "access-denied" and rec["approval"]["by"] == "bob (admin ops)" and rec["approval"]["note"] == "not this one"
    late = operator(cp, admin, tmp_path, "approve", ids[stop], check=False)
    assert late.exit_code == 1 and "no longer waiting: it was denied by bob (admin ops)" in late.output
    unknown = operator(cp, admin, tmp_path, "approve", "no-such-request", check=False)
    assert unknown.exit_code == 1 and "no held request 'no-such-request'" in unknown.output
    shown = json.loads(operator(cp, admin, tmp_path, "approvals", "show", ids[stop], "--json").output)
    assert (shown["state"], shown["decided_by"], shown["note"]) == ("denied", "bob (admin ops)", "not this one")
    assert shown["dataplane"].startswith("edge/") and stop in shown["url"]
    missing = operator(cp, admin, tmp_path, "approvals", "show", "no-such-request", check=False)
    assert missing.exit_code == 1 and "no held request 'no-such-request'" in missing.output


def test_nobody_decides_in_time_is_403_approval_timeout(plane, upstream):
    cp, dp, _, _ = plane
    marker = uuid.uuid4().hex
    r = Call(dp, "GET", f"/v1/quick/{marker}").response(30)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "approval-timeout")
    assert forwarded(upstream, marker) == []
    rec = audit_record(cp, r.headers["rr-request-id"])
    assert rec["approval"]["state"] == "timed-out"
    late = rr_cli(cp.home, "approve", r.headers["rr-request-id"], check=False)
    assert late.exit_code == 1 and "no longer waiting: it was timed-out" in late.output  # the data plane told the control plane


def test_a_client_that_leaves_withdraws_its_hold_at_the_control_plane(plane, upstream):
    cp, dp, _, _ = plane
    marker = uuid.uuid4().hex
    tls = held_requests.raw_request(dp, "agent", CALLER_KEY, f"/v1/refunds/{marker}")
    held = wait_pending(cp, marker)
    tls.close()
    eventually(lambda: all(p["request_id"] != held["request_id"] for p in pending(cp)), what="the hold no longer pending at the control plane")
    late = rr_cli(cp.home, "approve", held["request_id"], check=False)
    assert late.exit_code == 1 and "it was withdrawn" in late.output
    assert forwarded(upstream, marker) == []
    rec = audit_record(cp, held["request_id"])
    assert rec["code"] == "approval-withdrawn" and rec["approval"]["state"] == "withdrawn"


def test_another_data_plane_can_neither_see_nor_decide_the_hold(plane, upstream):
    cp, dp, admin, other = plane
    marker = uuid.uuid4().hex
    call = Call(dp, "POST", f"/v1/refunds/{marker}", {"amount": 3})
    request_id = wait_pending(cp, marker)["request_id"]
    b = bundles.read(other)
    with httpx.Client(base_url=cp.url, verify=b.ssl_context(), timeout=10, trust_env=False) as c:
        # "other" holds a valid data-plane certificate of this control plane, but the hold is edge's
        assert c.post("/v1/approvals/close", json={"request_id": request_id, "state": "approved", "by": "mitmweb"}).json()["state"] != "approved"
        assert c.post("/v1/approvals/close", json={"request_id": request_id, "state": "approved", "by": "alice"}).status_code == 400
        assert c.post("/v1/approvals/abandon", json={"ids": [request_id], "note": "x"}).status_code == 200
        assert c.post("/v1/approvals/decisions", json={"ids": [request_id]}).json() == {"decided": {}}
        # a data-plane certificate is no admin credential
        assert c.get("/v1/admin/approvals").status_code == 401
        assert c.post("/v1/admin/approvals/decide", json={"request_id": request_id, "state": "approved"}).status_code == 401
    # and an admin token is no data-plane certificate
    token = json.loads(admin.read_text())["token"]
    ca = ssl.create_default_context(cadata=json.loads(admin.read_text())["ca"])
    with httpx.Client(base_url=cp.url, verify=ca, timeout=10, trust_env=False, headers={"Authorization": f"Bearer {token}"}) as c:
        r = c.post("/v1/approvals/close", json={"request_id": request_id, "state": "approved", "by": "mitmweb"})
        assert r.status_code == 401 and "client certificate is required" in r.json()["error"]
        assert c.post("/v1/approvals/decisions", json={"ids": [request_id]}).status_code == 401
    assert any(p["request_id"] == request_id for p in pending(cp))  # still pending: nothing "other" did counted
    assert call.thread.is_alive() and forwarded(upstream, marker) == []
    rr_cli(cp.home, "deny", request_id, "--by", "bob")
    assert call.response().status_code == 403 and forwarded(upstream, marker) == []


def test_control_plane_unreachable_is_503_approval_unavailable(plane, upstream):
    cp, dp, _, _ = plane
    cp.stop()
    try:
        marker = uuid.uuid4().hex
        r = Call(dp, "POST", f"/v1/refunds/{marker}", {"amount": 5}).response(30)
        err = r.json()["error"]
        assert (r.status_code, err["code"]) == (503, "approval-unavailable"), r.text
        assert "control plane" in err["message"]
        assert forwarded(upstream, marker) == []
        # a request no rule holds still goes out: only the hold needs the control plane
        with httpx.Client(proxy=dp.url("agent", CALLER_KEY), verify=ssl.create_default_context(cafile=str(dp.ca)), timeout=30) as c:
            assert c.get(f"https://127.0.0.1:{upstream.port}/plain/{marker}").status_code == 200
    finally:
        cp.start()
    eventually(lambda: state(dp.home).get("connected"), what="the data plane back in contact")
    rec = audit_record(cp, r.headers["rr-request-id"])  # delivered from the spool once the control plane is back
    assert rec["code"] == "approval-unavailable"


class Impostor:
    """An HTTPS server that is not the control plane (another CA's certificate for
    127.0.0.1) and answers every call with an approval."""

    def __init__(self, pki) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.asked: list[str] = []
        impostor = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                impostor.asked.append(self.path)
                data = json.dumps({"decided": {}, "state": "approved", "by": "mallory", "at": None, "note": None}).encode()
                self.send_response(200)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(pki.server_cert, pki.server_key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_stopping_abandons_the_hold_and_an_impostor_cannot_approve(plane, upstream, pki, tmp_path):
    cp, _, _, other = plane
    home = tmp_path / "other"
    dp = dataplane(home, other, upstream_ca=pki.ca_cert, name="other").start()
    dp.upstream_port = upstream.port
    try:
        marker = uuid.uuid4().hex
        call = Call(dp, "POST", f"/v1/refunds/{marker}", {"amount": 6})
        held = wait_pending(cp, marker)
        assert held["dataplane"].startswith("other/")
    finally:
        dp.stop()  # SIGINT: every held request is answered 503 and abandoned at the control plane
    r = call.response()
    assert (r.status_code, r.json()["error"]["code"]) == (503, "approval-unavailable")
    assert r.json()["error"]["message"].startswith("rr stopped while the request was held for approval")
    late = rr_cli(cp.home, "approve", held["request_id"], check=False)
    assert late.exit_code == 1 and "no longer waiting: it was abandoned" in late.output
    assert forwarded(upstream, marker) == []
    # started again (from its cache) against a server that is not the control plane but answers
    # "approved" to everything: the link verifies the control plane's CA, so nothing is approved
    impostor = Impostor(pki)
    dp = dataplane(home, other, upstream_ca=pki.ca_cert, args=["--control-plane", impostor.url], name="other-impostor").start()
    dp.upstream_port = upstream.port
    try:
        marker = uuid.uuid4().hex
        r = Call(dp, "POST", f"/v1/refunds/{marker}", {"amount": 7}).response(30)
        assert (r.status_code, r.json()["error"]["code"]) == (503, "approval-unavailable"), r.text
        assert forwarded(upstream, marker) == [] and impostor.asked == []
    finally:
        dp.stop()
        impostor.close()
