"""Human approval of risky calls through a real `rr run` and a real TLS upstream:
a request an `approve` rule matches is held (nothing forwarded) until `rr approve` /
`rr deny` — real processes of their own, reaching the same database — decide it,
its time runs out, its client leaves, or the per-proxy cap refuses it. The secret
goes out only after approval; the preview, the webhook and the audit trail never
carry it."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from rr_addon.testing import held as held_requests
from rr_addon.testing.home import audit_record, database_url, prepare_home, rr_cli
from rr_addon.testing.proxy import ProxyProcess
from rr_addon.testing.wait import eventually

SECRET = "sk_approval_SECRET_6f1d"
CALLER_KEY = "KEY_bot_approval"
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
        approval: {{timeout: 300, notify: {{url: "http://127.0.0.1:{hook}/hook"}}}}
      - name: quick-decision
        effect: approve
        path: "^/v1/quick"
        approval: {{timeout: 2}}
      - name: no-refunds-of-disputes
        effect: deny
        path: "^/v1/refunds/disputed"
proxies:
  - name: agent
    targets: [{{target: api}}]
    meters:
      - name: refunds
        when: {{path: "^/v1/refunds"}}
        limits: {{day: 1000}}
    credentials: [{{name: bot, auth: api_key, secret: {key}}}]
  - name: trial
    mode: report
    targets: [{{target: api}}]
    credentials: [{{name: t, auth: api_key, secret: KEY_trial_approval}}]
"""

RR = Path(sys.executable).parent / "rr"
CAP = 3


class Hook:
    """A local webhook receiver (tests reach loopback only)."""

    def __init__(self) -> None:
        self.posts: list[dict] = []
        self.raw: list[bytes] = []
        self.got = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                hook.raw.append(body + b"\n" + str(self.headers).encode())
                hook.posts.append(json.loads(body))
                hook.got.set()
                self.send_response(500 if hook.fail else 200)  # a failing hook approves nothing
                self.send_header("content-length", "0")
                self.end_headers()

        self.fail = False
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def for_request(self, request_id: str) -> list[dict]:
        return [p for p in self.posts if p.get("request_id") == request_id]


@pytest.fixture(scope="module")
def hook():
    h = Hook()
    yield h
    h.server.shutdown()
    h.server.server_close()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, upstream, pki, hook):
    home = tmp_path_factory.mktemp("rr-approvals")
    prepare_home(home, POLICY.format(port=upstream.port, hook=hook.port, secret=SECRET, key=CALLER_KEY))
    with ProxyProcess(home, upstream_ca=pki.ca_cert, args=["--set", f"rr_max_held_requests={CAP}"]) as p:
        p.upstream_port = upstream.port
        yield p


def cli(proxy, *args: str) -> subprocess.CompletedProcess:
    """`rr …` as a process of its own: it shares nothing with the proxy but the database."""
    env = {k: v for k, v in os.environ.items() if k != "RR_MASTER_KEY"}
    env.update(RR_HOME=str(proxy.home), COLUMNS="250")
    if database_url(proxy.home):
        env["RR_DATABASE_URL"] = database_url(proxy.home)
    return subprocess.run([str(RR), *args], env=env, capture_output=True, text=True, timeout=60)


def pending(proxy) -> list[dict]:
    """`rr approvals --json`, run in this process: polled often, it would start an
    interpreter each time (seconds on a loaded machine); the decisions go through `cli`."""
    return json.loads(rr_cli(proxy.home, "approvals", "--json", env={"COLUMNS": "250"}).stdout)


def wait_pending(proxy, marker: str, timeout: float = 60) -> dict:
    return eventually(lambda: next((p for p in pending(proxy) if marker in p["url"]), None), timeout, f"a pending approval for {marker}")


def forwarded(upstream, marker: str):
    return [r for r in upstream.received if marker in r.path]


def Call(proxy, method: str, path: str, body: dict | None = None, content: bytes | None = None) -> held_requests.Call:
    """A request through rr in a thread of its own (it blocks while held)."""
    return held_requests.Call(proxy, "agent", CALLER_KEY, method, path, json=body, content=content)


def usage_used(proxy) -> int:
    out = rr_cli(proxy.home, "usage", "--json", "--proxy", "agent").output
    rows = [json.loads(line) for line in out.splitlines()]
    return max((r["used"] for r in rows if r["meter"] == "refunds" and r["window"] == "day"), default=0)


def counted_after(proxy, before: int, probe: str) -> int:
    """The meter once a request that is not held (`probe`) has counted: the embedded
    counters flush in order, so anything counted before it is visible by then."""
    verify = ssl.create_default_context(cafile=str(proxy.ca))
    with httpx.Client(proxy=proxy.url("agent", CALLER_KEY), verify=verify, timeout=30) as c:
        assert c.get(f"https://127.0.0.1:{proxy.upstream_port}/v1/refunds/probe-{probe[::-1]}").status_code == 200
    used = eventually(lambda: (n := usage_used(proxy)) >= before + 1 and n, what="the probe counted")
    return used - 1  # without the probe


def test_held_then_approved_from_another_process_goes_out_with_the_secret(proxy, upstream, hook):
    marker = uuid.uuid4().hex
    before = usage_used(proxy)
    call = Call(proxy, "POST", f"/v1/refunds/{marker}", {"amount": 4200, "password": "hunter2-pw", "note": f"my key is {CALLER_KEY}"})
    held = wait_pending(proxy, marker)
    assert held["proxy"] == "agent" and held["credential"] == "bot" and held["method"] == "POST" and held["rule"] == "refunds-need-a-human"
    assert held["url"] == f"https://127.0.0.1:{proxy.upstream_port}/v1/refunds/{marker}"
    # the preview shows the body, with secrets and secret-named fields masked
    assert '"amount":4200' in held["body_preview"]
    assert "hunter2-pw" not in held["body_preview"] and CALLER_KEY not in held["body_preview"] and "****" in held["body_preview"]
    assert forwarded(upstream, marker) == []  # held: nothing went out
    assert call.thread.is_alive()
    # the webhook was told once: Slack-compatible text, the request id, never a secret
    (note,) = eventually(lambda: hook.for_request(held["request_id"]), what="the webhook called for this request")
    assert held["request_id"] in note["text"] and "refunds-need-a-human" in note["text"]
    raw = b"".join(hook.raw)
    assert SECRET.encode() not in raw and CALLER_KEY.encode() not in raw and b"hunter2-pw" not in raw
    assert counted_after(proxy, before, marker) == before  # a held request counts nothing yet
    before += 1  # the probe
    done = cli(proxy, "approve", held["request_id"], "--by", "alice", "--note", "refund ticket 77")
    assert done.returncode == 0, done.stderr
    r = call.response()
    assert r.status_code == 200, r.text
    (got,) = forwarded(upstream, marker)
    assert got.header("authorization") == f"Bearer {SECRET}"  # injected after approval
    assert json.loads(got.body)["password"] == "hunter2-pw"  # what was approved is what went out
    eventually(lambda: usage_used(proxy) >= before + 1, what="the approved request counted")
    assert usage_used(proxy) == before + 1
    rec = audit_record(proxy.home, held["request_id"], limit=200)
    assert rec["result"] == "allow" and rec["rule"] == "refunds-need-a-human" and rec["reason"] == "approved by a person"
    assert rec["approval"]["state"] == "approved" and rec["approval"]["by"] == "alice" and rec["approval"]["note"] == "refund ticket 77" and rec["approval"]["at"]
    assert pending(proxy) == [] or all(p["request_id"] != held["request_id"] for p in pending(proxy))
    # a second decision on the same request is refused with what happened
    again = cli(proxy, "deny", held["request_id"], "--by", "mallory")
    assert again.returncode == 1 and "no longer waiting: it was approved by alice" in again.stderr


def test_denied_from_the_cli_is_403_and_nothing_goes_out(proxy, upstream):
    marker = uuid.uuid4().hex
    before = usage_used(proxy)
    call = Call(proxy, "POST", f"/v1/refunds/{marker}", {"amount": 1})
    held = wait_pending(proxy, marker)
    done = cli(proxy, "deny", held["request_id"], "--by", "bob", "--note", "not this one")
    assert done.returncode == 0, done.stderr
    r = call.response()
    err = r.json()["error"]
    assert (r.status_code, err["code"]) == (403, "access-denied")
    assert err["message"].startswith("denied by a person")
    assert forwarded(upstream, marker) == []
    assert counted_after(proxy, before, marker) == before  # meters count only approved requests
    rec = audit_record(proxy.home, held["request_id"], limit=200)
    assert rec["result"] == "deny" and rec["approval"]["by"] == "bob" and rec["approval"]["note"] == "not this one"


def test_the_preview_and_url_mask_the_caller_key_json_escaped_or_percent_encoded(proxy, upstream, hook):
    marker = uuid.uuid4().hex
    escaped = "\\u%04x" % ord(CALLER_KEY[0]) + CALLER_KEY[1:]
    encoded = "%4b" + CALLER_KEY[1:3] + "%5F" + CALLER_KEY[4:]  # KEY_bot… with two characters percent-encoded
    call = Call(proxy, "POST", f"/v1/refunds/{marker}?ref={encoded}", content=b'{"note":"my key is ' + escaped.encode() + b'"}')
    held = wait_pending(proxy, marker)
    assert CALLER_KEY[4:] not in held["body_preview"] and CALLER_KEY[4:] not in held["url"]
    assert held["body_preview"] == '{"note":"my key is ****"}' and held["url"].endswith("?ref=****")
    (note,) = eventually(lambda: hook.for_request(held["request_id"]), what="the webhook called for this request")
    assert CALLER_KEY[4:] not in json.dumps(note)  # the webhook (a chat channel) never sees it either
    assert cli(proxy, "deny", held["request_id"], "--by", "bob").returncode == 0
    assert call.response().status_code == 403 and forwarded(upstream, marker) == []


def test_a_deny_rule_wins_over_the_hold(proxy, upstream):
    marker = uuid.uuid4().hex
    r = Call(proxy, "POST", f"/v1/refunds/disputed/{marker}", {"amount": 1}).response(20)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "access-denied")
    assert forwarded(upstream, marker) == []


def test_nobody_decides_in_time_is_403_approval_timeout(proxy, upstream):
    marker = uuid.uuid4().hex
    r = Call(proxy, "GET", f"/v1/quick/{marker}").response(30)
    err = r.json()["error"]
    assert (r.status_code, err["code"]) == (403, "approval-timeout")
    assert err["message"] == "nobody approved the request in time (target rule quick-decision): waited 2 s"
    assert forwarded(upstream, marker) == []
    held = {"request_id": r.headers["rr-request-id"]}
    late = cli(proxy, "approve", held["request_id"])
    assert late.returncode == 1 and "no longer waiting: it was timed-out" in late.stderr
    found = rr_cli(proxy.home, "audit", "--json", "--code", "approval-timeout").output
    assert held["request_id"] in [json.loads(line)["request_id"] for line in found.splitlines()]


def test_a_client_that_leaves_withdraws_its_pending_approval(proxy, upstream):
    marker = uuid.uuid4().hex
    conn = held_requests.raw_request(proxy, "agent", CALLER_KEY, f"/v1/refunds/{marker}")
    held = wait_pending(proxy, marker)
    conn.close()
    eventually(lambda: all(p["request_id"] != held["request_id"] for p in pending(proxy)), what="the approval withdrawn after the client left")
    late = cli(proxy, "approve", held["request_id"])
    assert late.returncode == 1 and "it was withdrawn" in late.stderr
    assert forwarded(upstream, marker) == []
    rec = audit_record(proxy.home, held["request_id"], limit=200)
    assert rec["code"] == "approval-withdrawn" and rec["approval"]["state"] == "withdrawn"


def test_more_held_requests_than_the_cap_are_429(proxy, upstream):
    # CAP + 2 at once: exactly CAP are held, however they interleave; the others are refused at once
    markers = [uuid.uuid4().hex for _ in range(CAP + 2)]
    calls = dict(zip(markers, (Call(proxy, "POST", f"/v1/refunds/{m}", {"amount": 1}) for m in markers)))
    eventually(lambda: sum(1 for c in calls.values() if not c.thread.is_alive()) >= 2, what="the requests over the cap refused")
    refused = [m for m, c in calls.items() if not c.thread.is_alive()]
    for m in refused:
        err = calls[m].response().json()["error"]
        assert (calls[m].response().status_code, err["code"]) == (429, "approval-capacity")
        assert forwarded(upstream, m) == []
    held = [m for m in markers if m not in refused]
    ids = [wait_pending(proxy, m)["request_id"] for m in held]
    assert len(ids) == CAP
    for request_id in ids:
        assert cli(proxy, "deny", request_id, "--by", "ops").returncode == 0
    assert all(calls[m].response().status_code == 403 for m in held)
    # room again: the next one is held, not refused
    again = uuid.uuid4().hex
    call = Call(proxy, "POST", f"/v1/refunds/{again}", {"amount": 1})
    assert cli(proxy, "deny", wait_pending(proxy, again)["request_id"]).returncode == 0
    assert call.response().status_code == 403


def test_a_failing_webhook_approves_nothing(proxy, upstream, hook):
    hook.fail = True
    try:
        marker = uuid.uuid4().hex
        call = Call(proxy, "POST", f"/v1/refunds/{marker}", {"amount": 9})
        held = wait_pending(proxy, marker)
        eventually(lambda: hook.for_request(held["request_id"]), what="the webhook called")
        assert call.thread.is_alive() and forwarded(upstream, marker) == []
        assert any(p["request_id"] == held["request_id"] for p in pending(proxy))
        assert cli(proxy, "deny", held["request_id"]).returncode == 0
        assert call.response().status_code == 403
    finally:
        hook.fail = False


def test_approvals_table_and_unknown_ids(proxy):
    marker = uuid.uuid4().hex
    call = Call(proxy, "POST", f"/v1/refunds/{marker}", {"amount": 5})
    held = wait_pending(proxy, marker)
    table = cli(proxy, "approvals")
    assert table.returncode == 0 and held["request_id"] in table.stdout and "agent/bot" in table.stdout and "refunds-need-a-human" in table.stdout
    unknown = cli(proxy, "approve", "no-such-request")
    assert unknown.returncode == 1 and "no held request 'no-such-request'" in unknown.stderr
    assert cli(proxy, "deny", held["request_id"]).returncode == 0
    assert call.response().status_code == 403


def test_report_mode_flags_the_approve_rule_without_holding(proxy, upstream):
    marker = uuid.uuid4().hex
    verify = ssl.create_default_context(cafile=str(proxy.ca))
    with httpx.Client(proxy=proxy.url("trial", "KEY_trial_approval"), verify=verify, timeout=30) as c:
        r = c.post(f"https://127.0.0.1:{proxy.upstream_port}/v1/refunds/{marker}", json={"amount": 1})
    assert r.status_code == 200
    (got,) = forwarded(upstream, marker)
    assert got.header("authorization") == f"Bearer {SECRET}"
    rec = audit_record(proxy.home, r.headers["rr-request-id"], limit=200)
    assert (rec["result"], rec["scope"], rec["rule"]) == ("would-hold", "target", "refunds-need-a-human")


def test_explain_shows_the_hold(proxy):
    url = f"https://127.0.0.1:{proxy.upstream_port}/v1/refunds/x"
    out = rr_cli(proxy.home, "explain", "--credential", "agent/bot", "POST", url, check=False)
    assert out.exit_code == 3, out.output
    text = " ".join(out.output.split())  # the tree wraps at the console's width
    assert "refunds-need-a-human approve" in text
    assert "result held for approval — held for approval by rule (target rule refunds-need-a-human); waits up to 300 s" in text
    denied = rr_cli(proxy.home, "explain", "--credential", "agent/bot", "POST", url.replace("/x", "/disputed/x"), check=False)
    assert denied.exit_code == 2


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_too_large_to_show_is_refused_not_held(proxy, upstream, chunked):
    """A held request's body is read whole (the person approves what goes out): over the inspection limit is 413."""
    marker = uuid.uuid4().hex
    body = b'{"pad": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    content = iter([body[:1000], body[1000:]]) if chunked else body
    verify = ssl.create_default_context(cafile=str(proxy.ca))
    with httpx.Client(proxy=proxy.url("agent", CALLER_KEY), verify=verify, timeout=30) as c:
        r = c.post(f"https://127.0.0.1:{proxy.upstream_port}/v1/refunds/{marker}", content=content, headers={"content-type": "application/json"})
    err = r.json()["error"]
    assert (r.status_code, err["code"]) == (413, "payload-too-large")
    assert err["message"].startswith("request body over the inspection limit (a request held for approval is read whole)")
    assert forwarded(upstream, marker) == [] and not any(marker in p["url"] for p in pending(proxy))


def _apply_and_wait(proxy, policy: str) -> None:
    before = proxy.log_text().count("rr now enforces configuration version")
    (proxy.home / "changed.yaml").write_text(policy)
    rr_cli(proxy.home, "apply", "-f", str(proxy.home / "changed.yaml"))
    eventually(lambda: proxy.log_text().count("rr now enforces configuration version") > before, what="the proxy reloaded")


def test_an_approval_does_not_outlive_revoking_the_caller(proxy, upstream, hook):
    """A person approves a request whose credential was deactivated while it was held: refused."""
    marker = uuid.uuid4().hex
    original = (proxy.home / "policy.yaml").read_text()
    call = Call(proxy, "POST", f"/v1/refunds/{marker}", {"amount": 1})
    held = wait_pending(proxy, marker)
    try:
        _apply_and_wait(proxy, original.replace(f"secret: {CALLER_KEY}}}", f"secret: {CALLER_KEY}, active: false}}"))
        assert cli(proxy, "approve", held["request_id"], "--by", "alice").returncode == 0
        r = call.response()
        err = r.json()["error"]
        assert (r.status_code, err["code"]) == (401, "unauthenticated") and err["message"].startswith("caller credential inactive")
        assert forwarded(upstream, marker) == []
    finally:
        _apply_and_wait(proxy, original)
