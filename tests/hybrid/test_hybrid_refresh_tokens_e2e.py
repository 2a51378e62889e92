"""A hybrid data plane keeps the refresh token its identity provider rotated:
on its own disk, encrypted under its bundle's key, so after a restart it
spends the newest one (the configured one is retired) and nothing is in clear."""

from __future__ import annotations

import ssl

import httpx
import pytest

from rr_addon.testing.home import prepare_home
from rr_addon.testing.hybrid import ControlPlaneProcess, dataplane

from tests.e2e.test_oauth_grants import CLIENT_SECRET, make_idp
from tests.hybrid.test_hybrid_e2e import issue

pytestmark = pytest.mark.e2e

POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials:
      - name: user
        kind: oauth2_refresh_token
        token_url: {token_url}
        client_id: rr
        client_secret: {{env: RR_E2E_CLIENT_SECRET}}
        refresh_token: {{env: RR_E2E_REFRESH_TOKEN}}
        refresh_skew: 1
proxies:
  - name: agents
    targets: [{{target: api}}]
    credentials: [{{name: as-user, auth: api_key, secret: KEY-hybrid-user}}]
"""


def call(dp, upstream, path: str) -> httpx.Response:
    with httpx.Client(proxy=dp.url("agents", "KEY-hybrid-user"), verify=ssl.create_default_context(cafile=dp.ca), timeout=20) as c:
        return c.get(f"https://127.0.0.1:{upstream.port}{path}")


def rotated_out(idp) -> list[str]:
    return [f["refresh_token"] for e, f in idp.received if e == "token" and "refresh_token" in f]


def test_a_rotated_refresh_token_survives_a_data_plane_restart_encrypted(tmp_path, pki, upstream):
    with make_idp(ttl=60) as idp:
        seed = idp.refresh_token("rr", sub="carol")
        home = prepare_home(tmp_path / "cp", POLICY.format(port=upstream.port, token_url=idp.token_url),
                            env={"RR_E2E_CLIENT_SECRET": CLIENT_SECRET, "RR_E2E_REFRESH_TOKEN": seed})
        with ControlPlaneProcess(home) as cp:
            bundle = issue(home, "dp-oauth", cp.url, tmp_path)
            with dataplane(tmp_path / "dp", bundle, upstream_ca=pki.ca_cert, name="dp-oauth") as dp:
                r = call(dp, upstream, "/first")
                assert r.status_code == 200, r.text
            assert rotated_out(idp) == [seed] and not idp.refresh_token_active(seed), "the IdP rotated the configured token out"

            # restarted: the configuration still holds the retired seed; the spool holds the rotated one
            with dataplane(tmp_path / "dp", bundle, upstream_ca=pki.ca_cert, name="dp-oauth") as dp:
                r = call(dp, upstream, "/after-restart")
                assert r.status_code == 200, r.text
        assert idp.reuses == 0 and idp.refusals == [], "no retired refresh token was presented"
        spent = rotated_out(idp)
        assert len(spent) == 2 and spent[0] == seed and spent[1] != seed
        # the newest refresh token (issued at the second refresh) is stored, never in clear
        newest = [t for t in idp._refresh if idp.refresh_token_active(t)]
        assert len(newest) == 1
        for path in (tmp_path / "dp").rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                for token in (*spent, *newest):
                    assert token.encode() not in data, f"{token} in clear in {path}"


def test_a_re_issued_bundle_starts_again_from_the_configured_token(tmp_path):
    """What the old bundle's key encrypted is unreadable with the new one: dropped, not a failure."""
    import os

    from rr_addon.hybrid.grants import SpoolRefreshTokens
    from rr_addon.hybrid.spool import open_spool

    engine = open_spool(tmp_path)
    old, new = SpoolRefreshTokens(engine, os.urandom(32)), SpoolRefreshTokens(engine, os.urandom(32))
    token, generation = old.lease_now(("api", "user"), "seed-1", 30)
    assert (token, generation) == ("seed-1", 0)
    assert old.save_now(("api", "user"), generation, "rotated-1")
    assert old.lease_now(("api", "user"), "seed-1", 30) == ("rotated-1", 1)
    old.release_now(("api", "user"))
    assert new.lease_now(("api", "user"), "seed-1", 30)[0] == "seed-1"
    assert b"rotated-1" not in (tmp_path / "spool.db").read_bytes()
    engine.dispose()
