"""`rr run`: rr's defaults yield to the options the user passes, in a real
process (README: "`rr run` options the user passes win over rr's
defaults"); eager connections are refused with the reason."""

from __future__ import annotations

import ssl

import httpx

from rr_addon.testing.home import prepare_home
from rr_addon.testing.proxy import ProxyProcess

POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials: [{{name: live, kind: bearer, secret: sk_run_UPSTREAM}}]
proxies:
  - name: agent
    targets: [{{target: api}}]
    credentials: [{{name: main, auth: api_key, secret: KEY_run}}]
"""


def test_users_confdir_wins_and_its_ca_signs(tmp_path, upstream, pki):
    home = prepare_home(tmp_path / "home", POLICY.format(port=upstream.port))
    confdir = tmp_path / "my-confdir"
    with ProxyProcess(home, upstream_ca=pki.ca_cert, args=["--set", f"confdir={confdir}"]) as p:
        ca = confdir / "mitmproxy-ca-cert.pem"
        assert ca.exists() and f"rr: CA certificate {ca}" in p.log_text()
        with httpx.Client(proxy=p.url("agent", "KEY_run"), verify=ssl.create_default_context(cafile=str(ca)), timeout=10) as c:
            assert c.get(f"https://127.0.0.1:{upstream.port}/v1/x").status_code == 200


def test_web_open_browser_given_by_the_user_starts_mitmweb(tmp_path, upstream, pki):
    home = prepare_home(tmp_path, POLICY.format(port=upstream.port))
    with ProxyProcess(home, upstream_ca=pki.ca_cert, web=True, args=["--set", "web_open_browser=false"]) as p:
        r = httpx.get(f"http://127.0.0.1:{p.web_port}/options.json", headers={"Authorization": "Bearer rr-test-password"}, timeout=10)
        assert r.status_code == 200 and r.json()["web_open_browser"]["value"] is False
    assert "Received multiple values" not in p.log_text()


def test_listen_host_given_by_the_user_wins(tmp_path, upstream, pki):
    home = prepare_home(tmp_path, POLICY.format(port=upstream.port))
    with ProxyProcess(home, upstream_ca=pki.ca_cert, args=["--set", "listen_host=127.0.0.1"]) as p:
        with httpx.Client(proxy=p.url("agent", "KEY_run"), verify=ssl.create_default_context(cafile=str(p.ca)), timeout=10) as c:
            assert c.get(f"https://127.0.0.1:{upstream.port}/v1/x").status_code == 200


def test_eager_connections_are_refused_with_the_reason(tmp_path, upstream):
    home = prepare_home(tmp_path, POLICY.format(port=upstream.port))
    p = ProxyProcess(home, args=["--set", "connection_strategy=eager"])
    assert p.run_to_exit() == 1
    log = p.log_text()
    assert "connection_strategy=eager is not supported by rr" in log and "before rr has decided any request" in log
