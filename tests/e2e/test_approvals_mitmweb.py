"""Held requests in mitmweb, through mitmweb's own HTTP API (Bearer web password,
tornado's double-submit XSRF cookie and header) and in headless Chromium: a held
flow is intercepted and says so; resume approves it (it goes out with the secret,
which was never on the flow), kill denies it (403, nothing forwarded); a viewer who
edits a held flow and then resumes it gets it refused. Stopping rr answers what it
holds with 503. Screenshots of a held flow go to a temporary directory, and to
docs/ with RR_UPDATE_SCREENSHOTS=1."""

from __future__ import annotations

import json
import os
import shutil
import signal
import uuid
from pathlib import Path

import httpx
import pytest

from rr_addon.testing import held as held_requests
from rr_addon.testing.home import audit_record, prepare_home, rr_cli
from rr_addon.testing.mitmweb import web_api
from rr_addon.testing.proxy import WEB_PASSWORD, ProxyProcess
from rr_addon.testing.wait import eventually

SECRET = "sk_held_UPSTREAM_SECRET_91ab"
CALLER_KEY = "KEY_held_web"
DOCS = Path(__file__).resolve().parents[2] / "docs"
POLICY = """
targets:
  - name: payments
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials: [{{name: live, kind: bearer, secret: {secret}}}]
    rules:
      - name: refunds-need-a-human
        effect: approve
        methods: [POST]
        path: "^/v1/refunds"
        approval: {{timeout: 120}}
proxies:
  - name: billing-agent
    targets: [{{target: payments}}]
    credentials: [{{name: agent-1, auth: api_key, secret: {key}}}]
"""


@pytest.fixture(scope="module")
def web(tmp_path_factory, upstream, pki):
    home = tmp_path_factory.mktemp("rr-approvals-web")
    prepare_home(home, POLICY.format(port=upstream.port, secret=SECRET, key=CALLER_KEY))
    with ProxyProcess(home, upstream_ca=pki.ca_cert, web=True, args=["--set", "web_open_browser=false"]) as p:
        p.upstream_port = upstream.port
        yield p


def Call(proxy, path: str, body: dict) -> held_requests.Call:
    return held_requests.Call(proxy, "billing-agent", CALLER_KEY, "POST", path, json=body)


def held_flow(client: httpx.Client, marker: str) -> dict:
    held = lambda: next((f for f in client.get("/flows").json() if marker in f["request"]["path"] and f.get("intercepted")), None)  # noqa: E731
    return eventually(held, what="the held flow shown as intercepted in mitmweb")


def forwarded(upstream, marker: str):
    return [r for r in upstream.received if marker in r.path]


def test_a_held_flow_is_intercepted_and_resume_approves_it(web, upstream):
    marker = uuid.uuid4().hex
    call = Call(web, f"/v1/refunds/{marker}", {"amount": 1200})
    with web_api(web) as client:
        flow = held_flow(client, marker)
        assert flow["comment"].startswith("rr held for approval · billing-agent/agent-1 → payments · target rule refunds-need-a-human")
        assert "resume = approve, kill = deny" in flow["comment"] and flow["id"] in flow["comment"]
        assert flow["marked"] == "✍"  # a text symbol, not an emoji that needs an emoji font
        # held: no secret and no placeholder on the flow, the caller's key gone, nothing sent
        dumped = json.dumps(flow)
        assert SECRET not in dumped and CALLER_KEY not in dumped and "[rr:" not in dumped
        assert forwarded(upstream, marker) == [] and call.thread.is_alive()
        assert client.post(f"/flows/{flow['id']}/resume").status_code == 200
        r = call.response()
        assert r.status_code == 200, r.text
        (got,) = forwarded(upstream, marker)
        assert got.header("authorization") == f"Bearer {SECRET}"
        after = next(f for f in client.get("/flows").json() if f["id"] == flow["id"])
        assert not after["intercepted"] and after["comment"] == "rr allow · billing-agent/agent-1 → payments/live · approved by mitmweb" and after["marked"] == "" and SECRET not in json.dumps(after)
    rec = _audit(web, flow["id"])
    assert rec["result"] == "allow" and rec["approval"]["state"] == "approved" and rec["approval"]["by"] == "mitmweb"


def test_kill_in_mitmweb_denies_the_held_request(web, upstream):
    marker = uuid.uuid4().hex
    call = Call(web, f"/v1/refunds/{marker}", {"amount": 99})
    with web_api(web) as client:
        flow = held_flow(client, marker)
        assert client.post(f"/flows/{flow['id']}/kill").status_code == 200
    r = call.response()
    err = r.json()["error"]
    assert (r.status_code, err["code"]) == (403, "access-denied") and err["message"].startswith("denied by a person")
    assert forwarded(upstream, marker) == []
    rec = _audit(web, flow["id"])
    assert rec["result"] == "deny" and rec["approval"]["by"] == "mitmweb" and rec["approval"]["note"] == "killed in mitmweb"


@pytest.mark.parametrize(
    "edit",
    [
        {"path": "/v1/refunds/{marker}/but-bigger"},
        {"content": '{"amount": 999999}'},
        {"method": "PUT"},
        {"headers": [["host", "127.0.0.1:{port}"], ["content-type", "application/json"], ["x-extra", "1"]]},
        {"host": "localhost"},
    ],
    ids=["path", "body", "method", "headers", "host"],
)
def test_a_held_flow_edited_in_mitmweb_then_resumed_is_refused(web, upstream, edit):
    marker = uuid.uuid4().hex
    call = Call(web, f"/v1/refunds/{marker}", {"amount": 5})
    with web_api(web) as client:
        flow = held_flow(client, marker)
        edit = json.loads(json.dumps(edit).replace("{marker}", marker).replace("{port}", str(web.upstream_port)))
        assert client.put(f"/flows/{flow['id']}", json={"request": edit}).status_code == 200
        assert client.post(f"/flows/{flow['id']}/resume").status_code == 200
    r = call.response()
    err = r.json()["error"]
    assert (r.status_code, err["code"], err["message"]) == (403, "access-denied", "request changed after rr decided it")
    assert forwarded(upstream, marker) == []


def test_stopping_rr_answers_held_requests_503(web, upstream):
    # a second data plane on the same database: stopped while it holds a request
    other = ProxyProcess(web.home, name="stopping")
    other.start()
    other.upstream_port = web.upstream_port
    marker = uuid.uuid4().hex
    call = Call(other, f"/v1/refunds/{marker}", {"amount": 7})
    eventually(lambda: any(marker in p["url"] for p in json.loads(rr_cli(web.home, "approvals", "--json").output)), what="the request held")
    other.stop(signal.SIGINT)
    r = call.response(30)
    err = r.json()["error"]
    assert (r.status_code, err["code"]) == (503, "approval-unavailable")
    assert err["message"].startswith("rr stopped while the request was held for approval")
    assert forwarded(upstream, marker) == []
    assert not any(marker in p["url"] for p in json.loads(rr_cli(web.home, "approvals", "--json").output))


def _audit(web, request_id: str) -> dict:
    return audit_record(web.home, request_id, limit=100)


# ---------------------------------------------------------------------------- what a person sees


def test_a_held_flow_in_mitmweb(web, upstream, browser, tmp_path):
    marker = uuid.uuid4().hex[:8]
    path = f"/v1/refunds/re_{marker}"
    call = Call(web, path, {"charge": "ch_3PqR", "amount": 4200, "reason": "requested_by_customer"})
    with web_api(web) as client:
        flow = held_flow(client, marker)
        page = browser.new_page(viewport={"width": 1600, "height": 860})
        page.add_init_script("localStorage.setItem('mitmweb-column-widths', JSON.stringify({comment: 900}))")
        page.goto(f"http://127.0.0.1:{web.web_port}/?token={WEB_PASSWORD}")
        row = page.locator("tr", has_text=path)
        row.wait_for(timeout=15000)
        assert row.locator(".col-comment").inner_text().startswith("rr held for approval")
        assert row.locator(".marker").inner_text() == "✍"
        page.screenshot(path=str(tmp_path / "mitmweb-held-flow-list.png"))
        row.click()
        page.get_by_role("button", name="Resume").first.wait_for(timeout=10000)  # mitmweb's own intercept controls
        page.locator("section.request").get_by_text("requested_by_customer").wait_for(timeout=10000)
        assert SECRET not in page.content() and CALLER_KEY not in page.content()
        page.screenshot(path=str(tmp_path / "mitmweb-held-flow.png"))
        page.close()
        assert client.post(f"/flows/{flow['id']}/kill").status_code == 200
    assert call.response().status_code == 403
    if os.environ.get("RR_UPDATE_SCREENSHOTS") == "1":
        for png in ("mitmweb-held-flow-list.png", "mitmweb-held-flow.png"):
            shutil.copyfile(tmp_path / png, DOCS / png)
