"""Caller identity under attack, through a real proxy against the local IdP:
junk tokens flooding a slow introspection endpoint must not starve a JWKS
refresh (a rotated key keeps working), unknown tokens are capped per client,
and credentials no introspecting credential could accept are never sent to
the introspection endpoint."""

from __future__ import annotations

import ssl
import threading
import uuid

import httpx
import pytest

from rr_addon.testing.home import prepare_home
from rr_addon.testing.proxy import ProxyProcess
from rr_addon.testing.wait import eventually

POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials:
      - {{name: static, kind: bearer, secret: sk_upstream_0123456789abcdef}}
      - {{name: user, kind: oauth2_refresh_token, token_url: {token_url}, client_id: rr, client_secret: cs_upstream_client_0123456789, refresh_token: rt_upstream_refresh_0123456789}}
proxies:
  - name: agents
    targets: [{{target: api, credential: static}}]
    credentials:
      - name: idp-jwt
        auth: jwt_verify
        jwks_url: {jwks_url}
        issuer: {issuer}
        audience: api
        jwks_cache: {{timeout: 3}}
      - name: opaque
        auth: oauth2
        introspection_url: {introspection_url}
        client_id: rr
        client_secret: rr-client-secret
        issuer: {issuer}
        audience: api
        timeout: 20
"""


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, upstream, pki, idp):
    home = tmp_path_factory.mktemp("rr-identity-attacks")
    prepare_home(home, POLICY.format(port=upstream.port, jwks_url=idp.jwks_url, issuer=idp.issuer, introspection_url=idp.introspection_url, token_url=idp.token_url))
    with ProxyProcess(home, upstream_ca=pki.ca_cert) as p:
        p.upstream_port = upstream.port
        yield p


def call(proxy, token, timeout=30):
    marker = uuid.uuid4().hex
    verify = ssl.create_default_context(cafile=str(proxy.ca))
    with httpx.Client(proxy=proxy.url("agent", token), verify=verify, timeout=timeout) as c:
        return c.get(f"https://127.0.0.1:{proxy.upstream_port}/anything/{marker}")



def test_junk_tokens_against_a_slow_introspection_endpoint_do_not_starve_a_key_rotation(proxy, idp):
    assert call(proxy, idp.token(aud="api")).status_code == 200  # keys cached
    idp.hold("introspect")
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def junk(n):
        r = call(proxy, f"junk-token-{n}-{uuid.uuid4().hex}", timeout=60)
        with lock:
            answers.append(r)

    threads = [threading.Thread(target=junk, args=(n,)) for n in range(25)]
    try:
        for t in threads:
            t.start()
        # settled: every junk request is either held at the endpoint or answered (or a 20-connection pool is full)
        eventually(lambda: idp.waiting("introspect") + len(answers) >= 25 or idp.waiting("introspect") >= 20)
        # the IdP rotates its signing key while the introspections hang: the refetch must not wait behind them
        idp.add_key("RSA")
        rotated = call(proxy, idp.token(aud="api"))
        assert rotated.status_code == 200, rotated.text
        # one client address: 4 introspections may wait on the endpoint, the other 21 are refused at once
        eventually(lambda: len(answers) >= 21)
        busy = [r for r in answers if r.json()["error"]["message"].startswith("too many token introspections in flight")]
        assert len(busy) == 21 and all(r.status_code == 401 for r in busy)
    finally:
        idp.release("introspect")
        for t in threads:
            t.join(60)
    assert len(answers) == 25
    assert idp.count("introspect") == 4
    assert call(proxy, idp.token(aud="api")).status_code == 200  # and after the endpoint recovered


@pytest.mark.parametrize(
    "kind",
    ["jwt-from-another-issuer", "jwt-for-another-audience", "upstream-api-key", "upstream-refresh-token", "upstream-client-secret", "not-bearer-syntax"],
)
def test_credentials_no_introspecting_credential_could_accept_stay_in_rr(proxy, idp, kind):
    if kind == "jwt-from-another-issuer":
        token = idp.token(aud="api", iss="https://other-idp.example/")
    elif kind == "jwt-for-another-audience":
        token = idp.token(aud="billing")
    elif kind == "upstream-api-key":
        token = "sk_upstream_0123456789abcdef"  # the target's own secret, sent by a caller without an rr key
    elif kind == "upstream-refresh-token":
        token = "rt_upstream_refresh_0123456789"  # an OAuth target credential's refresh token
    elif kind == "upstream-client-secret":
        token = "cs_upstream_client_0123456789"
    else:
        token = "not,a;bearer-token"
    before = len(idp.received)
    r = call(proxy, token)
    assert r.status_code == 401
    expected = "token audience not accepted" if kind == "jwt-for-another-audience" else "token matches no credential"
    assert r.json()["error"]["message"].startswith(expected)
    assert [form for endpoint, form in idp.received[before:] if endpoint == "introspect"] == []


def test_an_opaque_token_still_goes_to_introspection(proxy, idp):
    token = idp.opaque(active=True, iss=idp.issuer, aud="api", sub="svc")
    before = idp.count("introspect")
    assert call(proxy, token).status_code == 200
    assert idp.count("introspect") == before + 1
