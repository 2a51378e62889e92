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
