"""End-to-end tests: real rr proxy processes with their own RR_HOME, in front of the
local upstreams of tests/conftest.py."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def idp():
    """A local identity provider with an RSA signing key, shared by a module's tests."""
    from rr_addon.testing.idp import IdP

    with IdP() as server:
        server.add_key("RSA")
        yield server


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by Playwright (skipped without it; a failure under RR_REQUIRE_SERVICES=1)."""
    import os
    import shutil

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(chromium):
        message = "Debian's chromium is not installed (apt-get install chromium)"
        if os.environ.get("RR_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        yield b
        b.close()
