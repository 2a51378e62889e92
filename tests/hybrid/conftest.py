"""Hybrid fixtures: a control plane (`rr control-plane serve`) and data planes
(`rr run --dataplane-bundle`) as separate processes, each with its own home."""

from __future__ import annotations

import pytest

from rr_addon.testing.certs import make_pki
from rr_addon.testing.upstream import Upstream


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def upstream(pki):
    with Upstream(pki) as up:
        yield up
