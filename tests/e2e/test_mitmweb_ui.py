"""What a security reviewer sees in mitmweb, checked in headless Chromium
(Debian's `chromium`, driven by Playwright): every flow's comment names the
caller, the result and, for a refusal, the scope and rule; rr's markers are
text symbols (✖ ⚠) and `~marked` lists what rr refused; a denied flow carries
no injection placeholder; the `rr` content view shows the decision tree of
the selected flow; `rr.explain` still works as a command.

Screenshots of the allowed, denied and filtered flows are taken into a
temporary directory on every run; with RR_UPDATE_SCREENSHOTS=1 they are copied
to docs/ (look at them before committing)."""

from __future__ import annotations

import json
import os
import shutil
import ssl
from pathlib import Path

import httpx
import pytest

from rr_addon.testing.home import prepare_home
from rr_addon.testing.proxy import ProxyProcess

DOCS = Path(__file__).resolve().parents[2] / "docs"
SECRET = "sk_ui_UPSTREAM_SECRET"
POLICY = """
targets:
  - name: stripe
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials: [{{name: live, kind: bearer, secret: {secret}}}]
proxies:
  - name: billing-agent
    targets: [{{target: stripe}}]
    rules: [{{name: no-deletes, effect: deny, methods: [DELETE], path: "^/v1/customers/"}}]
    credentials:
      - {{name: agent-1, auth: api_key, secret: KEY_ui}}
      - {{name: support-bot, auth: api_key, secret: KEY_ui_2, filters: [{{destroy: ["$.headers"]}}]}}
"""
ALLOWED = "rr allow · billing-agent/agent-1 → stripe/live"
DENIED = "rr deny access-denied · billing-agent/agent-1 → stripe/live · proxy rule no-deletes"
FILTERED = "rr allow · billing-agent/support-bot → stripe/live · filtered"


@pytest.fixture(scope="module")
def web(tmp_path_factory, upstream, pki):
    home = tmp_path_factory.mktemp("rr-ui")
    prepare_home(home, POLICY.format(port=upstream.port, secret=SECRET))
    with ProxyProcess(home, upstream_ca=pki.ca_cert, web=True) as p:
        verify = ssl.create_default_context(cafile=str(p.ca))
        base = f"https://127.0.0.1:{upstream.port}"
        with httpx.Client(proxy=p.url("billing-agent", "KEY_ui"), verify=verify, timeout=10) as c:
            assert c.get(f"{base}/v1/charges").status_code == 200
            assert c.delete(f"{base}/v1/customers/cus_42").status_code == 403
        with httpx.Client(proxy=p.url("billing-agent", "KEY_ui_2"), verify=verify, timeout=10) as c:
            r = c.get(f"{base}/v1/customers/cus_7")
            assert r.status_code == 200 and "headers" not in r.json()
        yield p


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    """Where screenshots go; copied to docs/ only when RR_UPDATE_SCREENSHOTS=1."""
    out = tmp_path_factory.mktemp("screenshots")
    yield out
    if os.environ.get("RR_UPDATE_SCREENSHOTS") == "1":
        for png in sorted(out.glob("*.png")):
            shutil.copyfile(png, DOCS / png.name)


def open_mitmweb(browser, web, *, comment_width: int = 0):
    page = browser.new_page(viewport={"width": 1600, "height": 860})
    if comment_width:
        # what dragging the Comment column's edge stores (mitmweb keeps it per browser)
        page.add_init_script(f"localStorage.setItem('mitmweb-column-widths', JSON.stringify({{comment: {comment_width}}}))")
    page.goto(f"http://127.0.0.1:{web.web_port}/?token=rr-test-password")
    page.locator("tr", has_text="/v1/customers/cus_42").wait_for(timeout=15000)
    return page


def rr_view(page) -> str:
    view = page.locator(".contentview pre")
    view.get_by_text("request id").first.wait_for(timeout=10000)
    return view.inner_text()


def choose_view(page, name: str) -> None:
    page.locator(".contentview").get_by_text("View:").click()
    page.locator("ul.dropdown-menu a", has_text=name).first.click()


def test_the_flow_list_names_caller_decision_and_rule(web, browser, shots):
    page = open_mitmweb(browser, web, comment_width=640)
    rows = {r: page.locator("tr", has_text=r) for r in ("/v1/charges", "/v1/customers/cus_42", "/v1/customers/cus_7")}
    assert rows["/v1/charges"].locator(".col-comment").inner_text() == ALLOWED
    assert rows["/v1/customers/cus_42"].locator(".col-comment").inner_text() == DENIED
    assert rows["/v1/customers/cus_7"].locator(".col-comment").inner_text() == FILTERED
    # the marker is a text symbol (U+2716), not an emoji that needs an emoji font
    assert rows["/v1/customers/cus_42"].locator(".marker").inner_text() == "✖"
    assert rows["/v1/charges"].locator(".marker").inner_text() == ""
    page.screenshot(path=str(shots / "mitmweb-flows.png"))
    # `~marked` is a filter for everything rr refused
    page.get_by_placeholder("Search").fill("~marked")
    rows["/v1/charges"].wait_for(state="detached", timeout=10000)
    listed = page.locator("tbody tr").all_inner_texts()
    assert any("/v1/customers/cus_42" in r for r in listed) and not any("/v1/customers/cus_7" in r for r in listed)
    page.close()


def test_a_denied_flow_shows_the_decision_tree_and_no_placeholder(web, browser, shots):
    page = open_mitmweb(browser, web)
    page.locator("tr", has_text="/v1/customers/cus_42").click()
    page.locator(".flow-detail, section.request").first.get_by_text("User-Agent").wait_for(timeout=10000)
    request = page.locator("section.request").inner_text()
    assert "Authorization" not in request and "[rr:" not in request  # never forwarded: nothing was injected
    page.locator("nav a", has_text="Response").click()
    text = rr_view(page)  # rr's own answer opens in the rr view
    assert "caller         billing-agent/agent-1" in text
    assert "result         deny 403 access-denied" in text
    assert "decided at     proxy rule no-deletes" in text
    assert "scope proxy: deny — denied by rule (no-deletes)" in text
    assert "result 403 access-denied — denied by rule (proxy rule no-deletes)" in text
    page.screenshot(path=str(shots / "mitmweb-denied-flow.png"))
    assert SECRET not in page.content() and "KEY_ui" not in page.content()
    page.close()


def test_an_allowed_flow_shows_its_decision_on_the_request(web, browser, shots):
    page = open_mitmweb(browser, web)
    page.locator("tr", has_text="/v1/charges").click()
    text = rr_view(page)  # a request without a body opens in the rr view
    assert "caller         billing-agent/agent-1" in text and "result         allow 200" in text
    assert "└── result allow — all scopes allow" in text
    choose_view(page, "auto")  # the placeholder, never the secret, among the headers
    page.locator("section.request").get_by_text("Bearer [rr:stripe/live]").wait_for(timeout=10000)
    choose_view(page, "rr")
    rr_view(page)
    page.screenshot(path=str(shots / "mitmweb-allowed-flow.png"))
    assert SECRET not in page.content() and "KEY_ui" not in page.content()
    page.close()


def test_a_filtered_flow_says_so(web, browser, shots):
    page = open_mitmweb(browser, web)
    page.locator("tr", has_text="/v1/customers/cus_7").click()
    text = rr_view(page)
    assert "caller         billing-agent/support-bot" in text and "response       filtered" in text
    page.locator("nav a", has_text="Response").click()
    page.locator(".contentview pre").get_by_text('"method"').wait_for(timeout=10000)  # the filtered body, as the caller got it
    assert '"headers"' not in page.locator(".contentview pre").inner_text()
    choose_view(page, "rr")  # any buffered body can be shown in the rr view
    assert "response       filtered" in rr_view(page)
    page.screenshot(path=str(shots / "mitmweb-filtered-flow.png"))
    page.close()


def test_flow_comments_and_markers_in_mitmwebs_api(web):
    with httpx.Client(base_url=f"http://127.0.0.1:{web.web_port}", headers={"Authorization": "Bearer rr-test-password"}) as w:
        listed = w.get("/flows").json()
    by_path = {f["request"]["path"]: f for f in listed}
    assert by_path["/v1/customers/cus_42"]["comment"] == DENIED and by_path["/v1/customers/cus_42"]["marked"] == "✖"
    assert by_path["/v1/charges"]["comment"] == ALLOWED and by_path["/v1/charges"]["marked"] == ""
    denied_headers = [k.lower() for k, _ in by_path["/v1/customers/cus_42"]["request"]["headers"]]
    assert "authorization" not in denied_headers
    assert SECRET not in json.dumps(listed)


def test_rr_explain_command_through_mitmweb(web):
    with httpx.Client(base_url=f"http://127.0.0.1:{web.web_port}", headers={"Authorization": "Bearer rr-test-password"}) as w:
        w.cookies.set("_mitmproxy_xsrf", "0123456789abcdef")  # mitmweb's XSRF check: cookie and header must agree
        r = w.post("/commands/rr.explain", json={"arguments": ["~marked"]}, headers={"X-XSRFToken": "0123456789abcdef"})
    text = r.json()["value"]
    assert "as billing-agent/agent-1" in text
    assert "scope proxy: deny — denied by rule (no-deletes)" in text
    assert "result 403 access-denied — denied by rule (proxy rule no-deletes)" in text
    assert SECRET not in text
