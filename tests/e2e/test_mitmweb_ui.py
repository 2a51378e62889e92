"""What a security team sees in mitmweb, checked in headless Chromium (Debian's
`chromium`, driven by Playwright): a denied flow is listed with rr's comment and
marker, its request headers show the credential placeholder and never a secret,
`~marked` filters what rr refused, and the `rr.explain` command explains it.
Saves docs/mitmweb-denied-flow.png."""

from __future__ import annotations

import os
import shutil
import ssl
from pathlib import Path

import httpx
import pytest

from rr_addon.testing.home import prepare_home
from rr_addon.testing.proxy import ProxyProcess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
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
    credentials: [{{name: agent-1, auth: api_key, secret: KEY_ui}}]
"""


@pytest.fixture(scope="module")
def playwright_browser():
    if not os.path.exists(CHROMIUM):
        message = "Debian's chromium is not installed (apt-get install chromium)"
        if os.environ.get("RR_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def web(tmp_path_factory, upstream, pki):
    home = tmp_path_factory.mktemp("rr-ui")
    prepare_home(home, POLICY.format(port=upstream.port, secret=SECRET))
    with ProxyProcess(home, upstream_ca=pki.ca_cert, web=True) as p:
        verify = ssl.create_default_context(cafile=str(p.ca))
        with httpx.Client(proxy=p.url("billing-agent", "KEY_ui"), verify=verify, timeout=10) as c:
            assert c.get(f"https://127.0.0.1:{upstream.port}/v1/charges").status_code == 200
            assert c.delete(f"https://127.0.0.1:{upstream.port}/v1/customers/cus_42").status_code == 403
        yield p


def test_denied_flow_in_mitmweb(web, playwright_browser):
    page = playwright_browser.new_page(viewport={"width": 1400, "height": 600})
    page.goto(f"http://127.0.0.1:{web.web_port}/?token=rr-test-password")
    row = page.locator("tr", has_text="/v1/customers/cus_42")
    row.wait_for(timeout=15000)
    assert "rr deny access-denied proxy/no-deletes" in row.inner_text()
    assert "rr allow stripe/live" in page.locator("tr", has_text="/v1/charges").inner_text()
    # rr's marker makes `~marked` a filter for everything rr refused
    page.get_by_placeholder("Search").fill("~marked")
    page.locator("tr", has_text="/v1/charges").wait_for(state="detached", timeout=10000)
    rows = page.locator("tbody tr").all_inner_texts()
    assert any("/v1/customers/cus_42" in r for r in rows) and not any("/v1/charges" in r for r in rows)
    row.click()
    page.get_by_text("Authorization").first.wait_for(timeout=10000)
    DOCS.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS / "mitmweb-denied-flow.png"))
    body = page.inner_text("body")
    assert "Bearer [rr:stripe/live]" in body
    assert SECRET not in page.content() and "KEY_ui" not in page.content()
    page.close()


def test_rr_explain_command_through_mitmweb(web):
    with httpx.Client(base_url=f"http://127.0.0.1:{web.web_port}", headers={"Authorization": "Bearer rr-test-password"}) as w:
        w.cookies.set("_mitmproxy_xsrf", "0123456789abcdef")  # mitmweb's XSRF check: cookie and header must agree
        r = w.post("/commands/rr.explain", json={"arguments": ["~marked"]}, headers={"X-XSRFToken": "0123456789abcdef"})
    text = r.json()["value"]
    assert "as billing-agent/agent-1" in text
    assert "scope proxy: deny — denied by rule (no-deletes)" in text
    assert "result 403 access-denied — denied by rule (proxy rule no-deletes)" in text
    assert SECRET not in text
