"""Upstream OAuth grants through a real `rr run` against the local IdP:
refresh tokens (rotated, the newest stored encrypted, kept across a restart and
shared by two data planes without ever spending one twice), jwt-bearer
assertions (explicit key and a Google service account), private_key_jwt client
authentication, fail-closed 502 upstream-auth-unavailable when the IdP is down
and the token expired (the upstream sees nothing), one IdP call for a burst,
and no secret in the audit trail, the log or mitmweb."""

from __future__ import annotations

import json
import ssl
import threading
import time
import uuid

import httpx
import pytest

from rr_addon.testing.home import prepare_home, rr_cli
from rr_addon.testing.idp import IdP, pem, pooled_key, service_account
from rr_addon.testing.mitmweb import Updates, web_api
from rr_addon.testing.proxy import ProxyProcess
from rr_addon.testing.wait import eventually

SA_EMAIL = "rr-e2e@project.iam.gserviceaccount.com"
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
        scope: [contacts.read]
        refresh_skew: 1
      - name: robot
        kind: oauth2_jwt_bearer
        token_url: {token_url}
        issuer: robot@example
        private_key: {{file: robot.pem}}
        key_id: robot-1
        resource: https://api.example/v2
        refresh_skew: 1
      - name: google
        kind: oauth2_jwt_bearer
        token_url: {token_url}
        service_account: {{file: sa.json}}
        scope: https://www.googleapis.com/auth/cloud-platform
        refresh_skew: 1
      - name: m2m
        kind: oauth2_client_credentials
        token_url: {token_url}
        client_id: rr-pk
        client_auth: private_key_jwt
        client_key: {{file: client.pem}}
        refresh_skew: 1
proxies:
  - name: agents
    targets: [{{target: api, credential: user}}]
    credentials:
      - {{name: as-user, auth: api_key, secret: KEY-user}}
      - {{name: as-robot, auth: api_key, secret: KEY-robot, target_credentials: {{api: robot}}}}
      - {{name: as-google, auth: api_key, secret: KEY-google, target_credentials: {{api: google}}}}
      - {{name: as-m2m, auth: api_key, secret: KEY-m2m, target_credentials: {{api: m2m}}}}
"""
KEYS = {"user": "KEY-user", "robot": "KEY-robot", "google": "KEY-google", "m2m": "KEY-m2m"}
CLIENT_SECRET = "rr-client-secret"


def make_home(tmp_path_factory, name, idp, upstream, seed):
    home = tmp_path_factory.mktemp(name)
    (home / "robot.pem").write_text(pem(pooled_key("RSA")))
    (home / "sa.json").write_text(service_account(pooled_key("RSA", 1), client_email=SA_EMAIL, token_uri=idp.token_url))
    (home / "client.pem").write_text(pem(pooled_key("EC")))
    env = {"RR_E2E_CLIENT_SECRET": CLIENT_SECRET, "RR_E2E_REFRESH_TOKEN": seed}
    prepare_home(home, POLICY.format(port=upstream.port, token_url=idp.token_url), env=env)
    return home


def make_idp(ttl: int) -> IdP:
    idp = IdP(token_ttl=ttl)
    idp.trust_issuer("robot@example", pooled_key("RSA"))
    idp.trust_issuer(SA_EMAIL, pooled_key("RSA", 1))
    idp.register_client_key("rr-pk", pooled_key("EC"))
    return idp


@pytest.fixture(scope="module")
def idp():
    with make_idp(ttl=3) as idp:
        yield idp


@pytest.fixture(scope="module")
def web(tmp_path_factory, upstream, pki, idp):
    seed = idp.refresh_token("rr", sub="alice")
    home = make_home(tmp_path_factory, "rr-oauth", idp, upstream, seed)
    args = ["--set", "web_open_browser=false", "--set", f"rr_audit_file={home / 'audit.jsonl'}"]
    with ProxyProcess(home, upstream_ca=pki.ca_cert, web=True, args=args) as p:
        p.upstream_port, p.seed = upstream.port, seed
        yield p


def call(proxy, who, marker=None):
    marker = marker or uuid.uuid4().hex
    verify = ssl.create_default_context(cafile=str(proxy.ca))
    with httpx.Client(proxy=proxy.url("agent", KEYS[who]), verify=verify, timeout=20) as c:
        r = c.get(f"https://127.0.0.1:{proxy.upstream_port}/anything/{marker}")
    return r, marker


def forwarded(upstream, marker):
    return [x for x in upstream.received if marker in x.path]


def issued_token(idp, grant):
    return {i["access_token"]: i for i in idp.issued if i["grant"] == grant}


@pytest.mark.parametrize("who, grant", [("user", "refresh_token"), ("robot", "jwt_bearer"), ("google", "jwt_bearer"), ("m2m", "client_credentials")])
def test_each_grant_gets_a_token_the_upstream_receives(web, upstream, idp, who, grant):
    r, marker = call(web, who)
    assert r.status_code == 200, r.text
    (got,) = forwarded(upstream, marker)
    scheme, token = got.header("Authorization").split()
    assert scheme == "Bearer" and token in issued_token(idp, grant), "the token the IdP issued for this grant"
    assert token not in r.text  # the upstream echoes the request: masked
    assert idp.refusals == []
    sub = issued_token(idp, grant)[token]["sub"]
    assert sub == {"user": "alice", "robot": "robot@example", "google": SA_EMAIL, "m2m": "rr-pk"}[who]


def test_idp_down_and_token_expired_is_502_and_the_upstream_sees_nothing(web, upstream, idp):
    r, _ = call(web, "robot")
    assert r.status_code == 200
    idp.down()
    try:
        time.sleep(3)  # the robot's token (3 s) expires; nothing to refresh it with
        r, marker = call(web, "robot")
        idp.up()
        idp.fail("token", 500)  # up again but erroring: still no token
        time.sleep(2.1)  # past the failure back-off, so the endpoint is asked again
        r2, marker2 = call(web, "robot")
    finally:
        idp.heal()
        idp.up()
    for resp, m in ((r, marker), (r2, marker2)):
        assert resp.status_code == 502, resp.text
        err = resp.json()["error"]
        assert err["code"] == "upstream-auth-unavailable" and err["message"].startswith("token endpoint unavailable"), err
        assert err["request_id"] == resp.headers["rr-request-id"] and resp.headers["rr-proxy-code"] == "upstream-auth-unavailable"
        assert forwarded(upstream, m) == [], "never an expired token, never a request to the upstream"
    time.sleep(2.1)  # the back-off passes: a healthy IdP gives a token again
    r, _ = call(web, "robot")
    assert r.status_code == 200


def test_a_burst_after_expiry_makes_one_idp_call(web, upstream, idp):
    call(web, "m2m")
    time.sleep(3)  # expired
    idp.hold("token")
    before = idp.count("token")
    results: list[int] = []
    start = threading.Barrier(12)

    def one():
        start.wait()
        results.append(call(web, "m2m")[0].status_code)

    threads = [threading.Thread(target=one) for _ in range(12)]
    try:
        for t in threads:
            t.start()
        eventually(lambda: idp.waiting("token") >= 1, what="the refresh held at the IdP")
        # Let the rest of the burst reach rr and wait for the same refresh. (No event says "a
        # request waits inside rr": mitmweb lists a flow only after rr's requestheaders hook.
        # The count below holds whatever the timing; the pause keeps the burst a burst.)
        time.sleep(0.5)
        assert idp.waiting("token") == 1
    finally:
        idp.release("token")
    for t in threads:
        t.join()
    assert results == [200] * 12
    assert idp.count("token") - before == 1


def test_rotated_refresh_tokens_are_spent_once_and_never_leak(web, upstream, idp):
    with Updates(web) as messages:
        first, _ = call(web, "user")
        time.sleep(2.2)  # due for refresh (3 s tokens, 1 s skew)
        second, marker = call(web, "user")
        assert first.status_code == second.status_code == 200
        refreshes = [f for e, f in idp.received if e == "token" and f.get("grant_type") == "refresh_token"]
        assert len(refreshes) >= 2 and refreshes[0]["refresh_token"] == web.seed
        assert len({f["refresh_token"] for f in refreshes}) == len(refreshes), "each rotation spent once"
        assert idp.reuses == 0 and not idp.refresh_token_active(web.seed)
        # nothing secret in the audit trail, the log, mitmweb's flows
        eventually(lambda: any(marker in m for m in messages), what="the flow on the /updates stream")
        audit = web.home / "audit.jsonl"
        eventually(lambda: audit.exists() and second.headers["rr-request-id"] in audit.read_text(), what="the audit record")
        with web_api(web) as api:
            flows, dump = api.get("/flows"), api.get("/flows/dump")
        assert flows.status_code == dump.status_code == 200
        mine = [f for f in flows.json() if marker in f["request"]["path"]]
        assert ["Authorization", "Bearer [rr:api/user]"] in mine[0]["request"]["headers"]
    assert any(marker in m for m in messages), "the /updates stream carried the flow"
    texts = {
        "/updates": "\n".join(messages),
        "audit": (web.home / "audit.jsonl").read_text(),
        "log": web.log_text(),
        "REST /flows": flows.text,
        "REST /flows/dump": dump.content.decode("latin-1"),
    }
    secrets = [i["access_token"] for i in idp.issued] + [f["refresh_token"] for f in refreshes] + [CLIENT_SECRET]
    secrets += [f["assertion"] for e, f in idp.received if "assertion" in f] + [f["client_assertion"] for e, f in idp.received if "client_assertion" in f]
    secrets += [line for line in (web.home / "robot.pem").read_text().splitlines() if "PRIVATE" not in line][:2]
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret is visible in {where}"


def test_the_rotated_refresh_token_survives_a_restart_and_two_data_planes_never_spend_one_twice(tmp_path_factory, upstream, pki):
    with make_idp(ttl=2) as idp:
        seed = idp.refresh_token("rr", sub="bob")
        home = make_home(tmp_path_factory, "rr-oauth-restart", idp, upstream, seed)
        with ProxyProcess(home, upstream_ca=pki.ca_cert) as p:
            p.upstream_port = upstream.port
            assert call(p, "user")[0].status_code == 200
        assert not idp.refresh_token_active(seed), "the IdP rotated the seed out"
        # restarted: the process has only the configuration (the seed, spent) and the database
        with ProxyProcess(home, upstream_ca=pki.ca_cert) as p:
            p.upstream_port = upstream.port
            r, _ = call(p, "user")
            assert r.status_code == 200, r.text
        assert idp.reuses == 0 and idp.refusals == []
        # `rr apply` of the same configuration (same seed) keeps the rotated token
        rr_cli(home, "apply", "-f", str(home / "policy.yaml"), env={"RR_E2E_CLIENT_SECRET": CLIENT_SECRET, "RR_E2E_REFRESH_TOKEN": seed})

        # two data planes on one database, both needing a refresh at once
        planes = [ProxyProcess(home, upstream_ca=pki.ca_cert, name=f"plane-{i}") for i in range(2)]
        for plane in planes:
            plane.start()
            plane.upstream_port = upstream.port
        try:
            statuses: list[int] = []
            start = threading.Barrier(8)

            def one(plane):
                start.wait()
                statuses.append(call(plane, "user")[0].status_code)

            for _ in range(2):
                threads = [threading.Thread(target=one, args=(planes[i % 2],)) for i in range(8)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                time.sleep(2)  # both planes' tokens expire: they race to refresh again
        finally:
            for plane in planes:
                plane.stop()
        assert statuses == [200] * 16
        assert idp.reuses == 0 and idp.refusals == [], "no rotated refresh token was ever presented twice"
        refreshes = [f["refresh_token"] for e, f in idp.received if e == "token"]
        assert len(refreshes) == len(set(refreshes)) >= 4


METERED = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials:
      - {{name: m2m, kind: oauth2_client_credentials, token_url: {token_url}, client_id: rr, client_secret: rr-client-secret}}
proxies:
  - name: metered
    targets: [{{target: api}}]
    meters: [{{name: requests, per: credential, limits: {{day: 3}}}}]
    credentials: [{{name: a, auth: api_key, secret: KEY-metered}}]
"""


def test_an_idp_outage_does_not_use_request_quota(tmp_path, upstream, pki):
    """502 upstream-auth-unavailable sends nothing upstream: like rr's other 502s, the meters give it back."""
    with IdP(token_ttl=300) as idp:
        home = prepare_home(tmp_path, METERED.format(port=upstream.port, token_url=idp.token_url))
        with ProxyProcess(home, upstream_ca=pki.ca_cert) as p:
            verify = ssl.create_default_context(cafile=str(p.ca))
            with httpx.Client(proxy=p.url("metered", "KEY-metered"), verify=verify, timeout=20) as c:
                url = f"https://127.0.0.1:{upstream.port}/anything/{uuid.uuid4().hex}"
                idp.fail("token", 503)
                during = [c.get(url) for _ in range(4)]
                assert [r.status_code for r in during] == [502] * 4, [r.text for r in during]
                assert {r.json()["error"]["code"] for r in during} == {"upstream-auth-unavailable"}
                idp.heal()
                r = eventually(lambda: (r := c.get(url)).status_code != 502 and r, what="the end of the failure back-off")
                assert r.status_code == 200, r.text
