"""Verified identities through a real proxy against a local identity provider:
JWTs via JWKS, OAuth 2.0 introspection, claims in rules, refusals with their
reasons (nothing forwarded), and an upstream OAuth client-credentials token
refreshed across expiry with one token request per refresh."""

from __future__ import annotations

import json
import ssl
import threading
import time
import uuid

import httpx
import pytest

from rr_addon.testing.home import prepare_home, rr_cli
from rr_addon.testing.idp import IdP, compact
from rr_addon.testing.proxy import ProxyProcess
from rr_addon.testing.wait import eventually

POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials:
      - {{name: static, kind: bearer, secret: sk_static_SECRET}}
      - name: oauth
        kind: oauth2_client_credentials
        token_url: {token_url}
        client_id: rr
        client_secret: rr-client-secret
        scope: payments
        refresh_skew: 1
proxies:
  - name: agents
    targets: [{{target: api, credential: static}}]
    rules:
      - {{name: writers-only, effect: deny, methods: [POST], claims: [{{claim: scope, value: "payments:write", presence: absent}}]}}
    credentials:
      - name: idp-jwt
        auth: jwt_verify
        jwks_url: {jwks_url}
        issuer: {issuer}
        audience: api
        required_claims: {{env: "^prod$"}}
      - name: opaque
        auth: oauth2
        introspection_url: {introspection_url}
        client_id: rr
        client_secret: rr-client-secret
        audience: api
        target_credentials: {{api: oauth}}
"""


@pytest.fixture(scope="module")
def idp():
    with IdP(token_ttl=3) as idp:
        idp.add_key("RSA")
        yield idp


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, upstream, pki, idp):
    home = tmp_path_factory.mktemp("rr-identity")
    prepare_home(
        home,
        POLICY.format(port=upstream.port, jwks_url=idp.jwks_url, issuer=idp.issuer, introspection_url=idp.introspection_url, token_url=idp.token_url),
    )
    with ProxyProcess(home, upstream_ca=pki.ca_cert, args=["--set", f"rr_audit_file={home / 'audit.jsonl'}"]) as p:
        p.upstream_port = upstream.port
        yield p


def call(proxy, token, method="GET", path=None, **kw):
    marker = uuid.uuid4().hex
    verify = ssl.create_default_context(cafile=str(proxy.ca))
    with httpx.Client(proxy=proxy.url("agent", token), verify=verify, timeout=20) as c:
        r = c.request(method, f"https://127.0.0.1:{proxy.upstream_port}{path or '/anything/' + marker}", **kw)
    return r, marker


def forwarded(upstream, marker):
    return [x for x in upstream.received if marker in x.path]


def test_jwt_via_jwks_and_claims_in_rules(proxy, upstream, idp):
    token = idp.token(env="prod", scope="payments:read payments:write")
    r, marker = call(proxy, token)
    assert r.status_code == 200, r.text
    (got,) = forwarded(upstream, marker)
    assert got.header("Authorization") == "Bearer sk_static_SECRET"  # the caller's token never reaches the upstream
    r, marker = call(proxy, idp.token(env="prod", scope="payments:read"), "POST", json={})
    assert r.status_code == 403 and "writers-only" in r.json()["error"]["message"]
    assert forwarded(upstream, marker) == []
    r, _ = call(proxy, token, "POST", json={})
    assert r.status_code == 200


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda idp: idp.token(env="prod", exp_in=-120), "token expired"),
        (lambda idp: idp.token(env="prod", nbf=time.time() + 600), "token not yet valid"),
        (lambda idp: idp.token(env="dev"), "required claim invalid"),
        (lambda idp: idp.token(env="prod", aud="other"), "token audience not accepted"),
        (lambda idp: compact({"alg": "none", "typ": "JWT"}, idp.claims(env="prod", iss=idp.issuer)), "token algorithm not allowed"),
        (lambda idp: idp.token(env="prod", kid=idp.add_key("RSA", publish=False, sign_with=False, pool=1)), "token signing key unknown"),
        (lambda idp: tamper(idp.token(env="prod")), "token signature invalid"),
        (lambda idp: idp.opaque(active=False, aud="api"), "token inactive"),
    ],
    ids=["expired", "not-yet-valid", "required-claim", "wrong-audience", "alg-none", "unknown-kid", "tampered", "introspection-inactive"],
)
def test_refused_tokens_are_401_and_forward_nothing(proxy, upstream, idp, make, reason):
    r, marker = call(proxy, make(idp))
    assert r.status_code == 401, r.text
    err = r.json()["error"]
    assert err["code"] == "unauthenticated" and err["message"].startswith(reason), err
    assert forwarded(upstream, marker) == []


def tamper(token: str) -> str:
    import base64

    header, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["env"] = "prod"
    claims["sub"] = "mallory"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{sig}"


def test_introspection_and_upstream_client_credentials(proxy, upstream, idp):
    token = idp.opaque(active=True, aud="api", sub="svc-1", scope="payments:write")
    r, marker = call(proxy, token)
    assert r.status_code == 200, r.text
    (got,) = forwarded(upstream, marker)
    upstream_token = got.header("Authorization")
    assert upstream_token.startswith("Bearer at-")  # fetched from the token endpoint
    assert upstream_token.split()[1] not in r.text  # echoed back: masked
    # the audit record says who, how — never the token
    audit = proxy.home / "audit.jsonl"
    mine = lambda: next((x for x in map(json.loads, audit.read_text().splitlines()) if x["path"] == f"/anything/{marker}"), None)  # noqa: E731
    rec = eventually(lambda: audit.exists() and mine(), what="the audit record")
    assert (rec["credential"], rec["subject"], rec["verification"]) == ("opaque", "svc-1", "introspection")
    assert token not in (proxy.home / "audit.jsonl").read_text()


def test_upstream_token_refreshed_once_per_expiry_under_load(proxy, upstream, idp):
    caller = idp.opaque(active=True, aud="api", sub="svc-2")
    r, marker = call(proxy, caller)
    (first,) = forwarded(upstream, marker)
    current = first.header("Authorization")  # the token in use when the load starts
    before = idp.count("token")
    seen: set[str] = set()
    lock = threading.Lock()
    deadline = time.monotonic() + 6  # tokens live 3 s, refreshed 1 s before expiry: about three refreshes

    def worker():
        verify = ssl.create_default_context(cafile=str(proxy.ca))
        with httpx.Client(proxy=proxy.url("agent", caller), verify=verify, timeout=20) as c:
            while time.monotonic() < deadline:
                marker = uuid.uuid4().hex
                assert c.get(f"https://127.0.0.1:{proxy.upstream_port}/anything/{marker}").status_code == 200
                (got,) = forwarded(upstream, marker)
                with lock:
                    seen.add(got.header("Authorization"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    requests = idp.count("token") - before
    fresh = seen - {current}
    assert len(fresh) == requests, (sorted(seen), requests)  # every token fetched was used: one request per refresh
    assert 2 <= requests <= 5


def test_token_endpoint_erroring_is_502_upstream_auth_unavailable_and_refusing_is_credential_error(proxy, upstream, idp):
    caller = idp.opaque(active=True, aud="api", sub="svc-3")
    time.sleep(3.1)  # let the cached upstream token expire
    idp.fail("token", 503)
    try:
        r, marker = call(proxy, caller)
    finally:
        idp.heal()
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "upstream-auth-unavailable"
    assert forwarded(upstream, marker) == []
    time.sleep(3.1)  # past the failure back-off
    idp.override("token", 401, {"error": "invalid_client"})  # the IdP refuses the client: a configuration to fix
    try:
        r, marker = call(proxy, caller)
    finally:
        idp.heal()
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "upstream-credential-error"
    assert forwarded(upstream, marker) == []


def test_introspection_endpoint_down_fails_closed(proxy, upstream, idp):
    caller = idp.opaque(active=True, aud="api", sub="svc-4")
    idp.down()
    try:
        r, marker = call(proxy, caller)
    finally:
        idp.up()
    assert r.status_code == 401 and r.json()["error"]["message"].startswith("introspection endpoint unavailable")
    assert forwarded(upstream, marker) == []


def test_apply_refuses_ambiguous_verifying_credentials(tmp_path, idp):
    text = f"""
proxies:
  - name: p
    credentials:
      - {{name: a, auth: jwt_verify, jwks_url: "{idp.jwks_url}", issuer: "{idp.issuer}", audience: api}}
      - {{name: b, auth: jwt_verify, jwks_url: "{idp.jwks_url}", issuer: "{idp.issuer}", audience: api}}
"""
    home = tmp_path / "amb"
    home.mkdir()
    rr_cli(home, "init")
    (home / "p.yaml").write_text(text)
    r = rr_cli(home, "apply", "-f", str(home / "p.yaml"), check=False)
    assert r.exit_code == 1
    assert "proxies[p].credentials[a] and proxies[p].credentials[b] could both match one token" in r.output


def test_rr_explain_with_a_token(proxy, idp):
    token = idp.token(env="prod", scope="payments:read")
    r = rr_cli(proxy.home, "explain", "--token", token, "POST", f"https://127.0.0.1:{proxy.upstream_port}/x", "-d", "{}", check=False)
    assert "token: accepted by agents/idp-jwt via jwks" in r.output
    assert "result 403 access-denied — denied by rule (proxy rule writers-only)" in r.output and r.exit_code == 2
    r = rr_cli(proxy.home, "explain", "--token", idp.token(env="prod", exp_in=-300), "GET", f"https://127.0.0.1:{proxy.upstream_port}/x", check=False)
    assert r.exit_code == 1 and "token refused (jwks): token expired" in r.output
