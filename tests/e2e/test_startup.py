"""A proxy that cannot load its configuration never starts serving: a clear
message and a non-zero exit, for `rr run` and for `mitmdump -s rr_addon/addon.py`."""

from __future__ import annotations

import os
import subprocess

import pytest

from rr_addon.testing.proxy import BIN, ProxyProcess


@pytest.mark.parametrize("direct", [False, True], ids=["rr-run", "mitmdump-s"])
def test_unusable_database_exits_non_zero(tmp_path, direct):
    p = ProxyProcess(tmp_path, direct=direct, env={"RR_DATABASE_URL": f"sqlite:///{tmp_path}/missing/rr.db"})
    assert p.run_to_exit() == 1
    assert "cannot open database" in p.log_text()


@pytest.mark.parametrize("direct", [False, True], ids=["rr-run", "mitmdump-s"])
def test_uninitialised_database_says_run_init(tmp_path, direct):
    p = ProxyProcess(tmp_path, direct=direct)
    assert p.run_to_exit() == 1
    assert "not initialised: run `rr init`" in p.log_text()


def test_rr_run_help_lists_mitmproxy_passthrough():
    out = subprocess.run([str(BIN / "rr"), "run", "--help"], capture_output=True, text=True, timeout=30, env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0 and "Other arguments go to mitmproxy" in out.stdout


@pytest.mark.parametrize("direct", [False, True], ids=["rr-run", "mitmdump-s"])
def test_proxy_debug_is_refused_at_start(tmp_path, direct):
    """proxy_debug logs the bytes mitmproxy writes upstream: the injected secret with them."""
    from rr_addon.testing.home import prepare_home

    prepare_home(tmp_path, "targets: [{name: t, hosts: [api.example.com]}]\nproxies: [{name: p, targets: [{target: t}], credentials: [{name: c, auth: api_key, secret: K}]}]\n")
    p = ProxyProcess(tmp_path, direct=direct, args=["--set", "proxy_debug=true"])
    assert p.run_to_exit() != 0
    assert "rr refuses proxy_debug: it logs the bytes sent upstream, injected secrets included" in p.log_text()
