"""Fixtures of the identity tests."""

from __future__ import annotations

import pytest

from rr_addon.testing.idp import IdP


@pytest.fixture
def idp():
    """A local identity provider with an RSA signing key, fresh for each test."""
    with IdP() as server:
        server.add_key("RSA")
        yield server
