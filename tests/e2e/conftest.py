"""End-to-end fixtures: a local TLS upstream that records what it receives, and
real rr proxy processes with their own RR_HOME."""

from __future__ import annotations

import pytest
from rr_addon.testing.certs import make_pki
from rr_addon.testing.upstream import Upstream

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def upstream(pki):
    with Upstream(pki) as up:
        yield up


@pytest.fixture(scope="session")
def plain_upstream():
    with Upstream(None) as up:
        yield up
