"""scripts/quickstart with another port: what it prints is where rr listens,
and the printed HTTPS_PROXY works (README: the Quickstart works unchanged with
another port). The request goes to a host that is no target, so rr answers it
itself and nothing leaves loopback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from rr_addon.testing.proxy import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_prints_the_address_it_listens_on(tmp_path):
    stamp, pyproject = ROOT / ".venv" / ".rr-installed", ROOT / "pyproject.toml"
    if not stamp.exists() or pyproject.stat().st_mtime > stamp.stat().st_mtime:
        pytest.skip("scripts/setup would reinstall .venv (pyproject.toml changed): run scripts/setup first")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RR_DATABASE_URL", "RR_MASTER_KEY")}
    env.update(RR_HOME=str(tmp_path), PYTHONUNBUFFERED="1")
    out = tmp_path / "quickstart.out"
    with out.open("wb") as f:
        proc = subprocess.Popen([str(ROOT / "scripts" / "quickstart"), "-p", str(port)], stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_for_port(port, 60, proc, out)
        text = out.read_text()
        assert f"rr is starting on 127.0.0.1:{port}." in text
        proxy = re.search(r"export HTTPS_PROXY=(\S+)", text).group(1)
        assert proxy == f"http://demo-agent:rr-demo-key@127.0.0.1:{port}"
        assert "8080" not in text
        assert f"SSL_CERT_FILE={tmp_path / 'certs' / 'mitmproxy-ca-cert.pem'}" in text
        r = httpx.get("http://not-a-target.invalid/", proxy=proxy, timeout=10)
        assert r.status_code == 403 and r.json()["error"]["code"] == "unknown-target"
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
