"""Every credential kind survives the store (issue 23, item 1): apply, export,
re-apply the export as it is and with its secrets given again, a running
proxy reloads it, a restarted `rr run` loads it — and then a request through
the real proxy authenticates with each caller kind and carries the injection
of each target credential kind."""

from __future__ import annotations

import base64
import ssl
import time
import uuid

import httpx
import jwt
import pytest
import yaml

from rr_addon.policy import schema
from rr_addon.policy.identity_schema import JwtVerifyCaller, OAuth2Caller, OAuth2ClientCredentials
from rr_addon.policy.oauth_grants_schema import OAuth2JwtBearer, OAuth2RefreshToken
from rr_addon.testing.home import prepare_home, rr_cli
from rr_addon.testing.idp import IdP, compact, hs256, pem, pooled_key, public_jwk, service_account
from rr_addon.testing.proxy import ProxyProcess

HMAC_KEY = "hmac-key-for-hs256-verification-0123456789"
SECRETS = {  # environment variable -> value; every secret of the policy comes from here
    "T_BEARER": "sk_bearer_SECRET",
    "T_APIKEY_H": "sk_apikey_header_SECRET",
    "T_APIKEY_Q": "sk_apikey_query_SECRET",
    "T_BASIC": "sk_basic_SECRET",
    "T_JWT": "eyJhbGciOiJub25lIn0.eyJzdWIiOiJyciJ9.static",
    "T_CUSTOM": "sk_custom_SECRET",
    "T_CC": "rr-client-secret",
    "T_RT": "rt-kinds-SEED-refresh-token",
    "T_JB_KEY": pem(pooled_key("RSA", 2)),
    "T_SA": service_account(pooled_key("RSA", 3), client_email="kinds@project.iam.gserviceaccount.com", token_uri="{token_url}"),
    "C_APIKEY": "caller-api-key-SECRET",
    "C_BEARER": "caller-bearer-SECRET",
    "C_JWT": "caller.static.jwt",
    "C_BASIC": "caller-basic-SECRET",
    "C_HMAC": HMAC_KEY,
    "C_INTROSPECT": "rr-client-secret",
}
TARGET_KINDS = ["bearer", "apikey-header", "apikey-query", "basic", "jwt", "custom", "none", "oauth-cc", "oauth-rt", "oauth-jb", "oauth-sa"]
SECRETS.update({f"C_VIA_{i}": f"via-{i}-SECRET" for i in range(len(TARGET_KINDS))})

POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials:
      - {{name: bearer, kind: bearer, secret: {{env: T_BEARER}}}}
      - {{name: apikey-header, kind: api_key, header: X-Api-Key, secret: {{env: T_APIKEY_H}}}}
      - {{name: apikey-query, kind: api_key, query: api_key, secret: {{env: T_APIKEY_Q}}}}
      - {{name: basic, kind: basic, username: up, secret: {{env: T_BASIC}}}}
      - {{name: jwt, kind: jwt, secret: {{env: T_JWT}}}}
      - {{name: custom, kind: custom, headers: {{X-Custom: "Token {{secret}}"}}, secret: {{env: T_CUSTOM}}}}
      - {{name: none, kind: none}}
      - {{name: oauth-cc, kind: oauth2_client_credentials, token_url: "{token_url}", client_id: rr, client_secret: {{env: T_CC}}}}
      - {{name: oauth-rt, kind: oauth2_refresh_token, token_url: "{token_url}", client_id: rr, client_secret: {{env: T_CC}}, refresh_token: {{env: T_RT}}}}
      - {{name: oauth-jb, kind: oauth2_jwt_bearer, token_url: "{token_url}", issuer: kinds-robot, private_key: {{env: T_JB_KEY}}}}
      - {{name: oauth-sa, kind: oauth2_jwt_bearer, token_url: "{token_url}", service_account: {{env: T_SA}}, scope: cloud}}
proxies:
  - name: agents
    targets: [{{target: api, credential: bearer}}]
    credentials:
      - {{name: c-api-key, auth: api_key, secret: {{env: C_APIKEY}}}}
      - {{name: c-bearer, auth: bearer, secret: {{env: C_BEARER}}}}
      - {{name: c-jwt, auth: jwt, secret: {{env: C_JWT}}}}
      - {{name: c-basic, auth: basic, username: ci, secret: {{env: C_BASIC}}}}
      - {{name: c-jwks-url, auth: jwt_verify, jwks_url: "{jwks_url}", issuer: "{issuer}", audience: api}}
      - {{name: c-inline-jwks, auth: jwt_verify, jwks: {inline}, algorithms: [ES256], issuer: inline-issuer, audience: api}}
      - {{name: c-hmac, auth: jwt_verify, secret: {{env: C_HMAC}}, issuer: hmac-issuer, audience: api}}
      - {{name: c-introspection, auth: oauth2, introspection_url: "{introspection_url}", client_id: rr, client_secret: {{env: C_INTROSPECT}}, audience: opaque}}
      - {{name: c-access-token, auth: oauth2, jwks_url: "{jwks_url}", issuer: "{issuer}", audience: at-api}}
{via}
"""
VIA = "\n".join(
    f"      - {{name: via-{kind}, auth: api_key, secret: {{env: C_VIA_{i}}}, target_credentials: {{api: {kind}}}}}"
    for i, kind in enumerate(TARGET_KINDS)
)
INLINE_KEY = pooled_key("EC", 3)


def secrets_back(doc: dict) -> dict:
    """The export with each credential's secret given again, from the same variables."""
    by_name = {
        **{c: v for c, v in (("bearer", "T_BEARER"), ("apikey-header", "T_APIKEY_H"), ("apikey-query", "T_APIKEY_Q"), ("basic", "T_BASIC"), ("jwt", "T_JWT"), ("custom", "T_CUSTOM"))},
        "c-api-key": "C_APIKEY", "c-bearer": "C_BEARER", "c-jwt": "C_JWT", "c-basic": "C_BASIC", "c-hmac": "C_HMAC",
        **{f"via-{k}": f"C_VIA_{i}" for i, k in enumerate(TARGET_KINDS)},
    }  # fmt: skip
    for t in doc["targets"]:
        for c in t["credentials"]:
            if c["name"] == "oauth-cc":
                c["client_secret"] = {"env": "T_CC"}
            elif c["name"] == "oauth-rt":
                c["client_secret"], c["refresh_token"] = {"env": "T_CC"}, {"env": "T_RT"}
            elif c["name"] == "oauth-jb":
                c["private_key"] = {"env": "T_JB_KEY"}
            elif c["name"] == "oauth-sa":
                c["service_account"] = {"env": "T_SA"}
            elif c["name"] in by_name:
                c["secret"] = {"env": by_name[c["name"]]}
    for p in doc["proxies"]:
        for c in p["credentials"]:
            if c["name"] == "c-introspection":
                c["client_secret"] = {"env": "C_INTROSPECT"}
            elif c["name"] in by_name:
                c["secret"] = {"env": by_name[c["name"]]}
    return doc


def test_the_policy_covers_every_credential_kind_of_the_schema():
    """A new kind added to the schema must be added here too."""
    target_kinds = {m.model_fields["kind"].annotation.__args__[0] for m in schema.TargetCredential.__origin__.__args__}
    caller_kinds = {m.model_fields["auth"].annotation.__args__[0] for m in schema.ProxyCredential.__origin__.__args__}
    oauth = {m.model_fields["kind"].annotation.__args__[0] for m in (OAuth2ClientCredentials, OAuth2RefreshToken, OAuth2JwtBearer)}
    assert target_kinds == {"api_key", "bearer", "basic", "jwt", "custom", "none", *oauth}
    assert caller_kinds == {"api_key", "bearer", "jwt", "basic", JwtVerifyCaller.model_fields["auth"].annotation.__args__[0], OAuth2Caller.model_fields["auth"].annotation.__args__[0]}


@pytest.fixture(scope="module")
def idp():
    with IdP() as idp:
        idp.add_key("RSA")
        idp.refresh_token("rr", value=SECRETS["T_RT"])
        idp.trust_issuer("kinds-robot", pooled_key("RSA", 2))
        idp.trust_issuer("kinds@project.iam.gserviceaccount.com", pooled_key("RSA", 3))
        SECRETS["T_SA"] = SECRETS["T_SA"].replace("{token_url}", idp.token_url)
        yield idp


@pytest.fixture(scope="module")
def restarted(tmp_path_factory, upstream, pki, idp):
    home = tmp_path_factory.mktemp("rr-kinds")
    policy = POLICY.format(
        port=upstream.port,
        token_url=idp.token_url,
        jwks_url=idp.jwks_url,
        issuer=idp.issuer,
        introspection_url=idp.introspection_url,
        inline=yaml.safe_dump({"keys": [public_jwk(INLINE_KEY, "inline-1", "ES256")]}, default_flow_style=True).strip(),
        via=VIA,
    )
    prepare_home(home, policy, env=SECRETS)
    with ProxyProcess(home, upstream_ca=pki.ca_cert, name="first") as first:
        exported = rr_cli(home, "export").output
        for secret in SECRETS.values():
            assert secret not in exported
        (home / "exported.yaml").write_text(exported)
        r = rr_cli(home, "apply", "-f", str(home / "exported.yaml"))  # omitted secrets: the stored ones are kept
        assert "no changes" in r.output, r.output
        doc = secrets_back(yaml.safe_load(exported))
        (home / "again.yaml").write_text(yaml.safe_dump(doc))
        r = rr_cli(home, "apply", "-f", str(home / "again.yaml"), env=SECRETS)
        assert "no changes" in r.output, r.output
        doc["proxies"][0]["description"] = "version 2"
        (home / "v2.yaml").write_text(yaml.safe_dump(doc))
        r = rr_cli(home, "apply", "-f", str(home / "v2.yaml"), env=SECRETS)
        assert "configuration version 2" in r.output, r.output
        first.wait_for_log("rr now enforces configuration version 2", timeout=15)
        assert "failed to load" not in first.log_text()
    with ProxyProcess(home, upstream_ca=pki.ca_cert, name="restarted") as p:
        assert "rr enforces configuration version 2" in p.log_text()
        p.upstream_port = upstream.port
        yield p


def call(proxy, user, secret, *, query=""):
    marker = uuid.uuid4().hex
    verify = ssl.create_default_context(cafile=str(proxy.ca))
    with httpx.Client(proxy=proxy.url(user, secret), verify=verify, timeout=20) as c:
        r = c.get(f"https://127.0.0.1:{proxy.upstream_port}/anything/{marker}{query}")
    return r, marker


def received(upstream, marker):
    (got,) = [x for x in upstream.received if marker in x.path]
    return got


def caller_token(kind: str, idp) -> tuple[str, str]:
    """(proxy user, secret) a client of this caller kind presents."""
    now = int(time.time())
    if kind == "c-jwks-url":
        return "agent", idp.token()
    if kind == "c-inline-jwks":
        claims = {"iss": "inline-issuer", "aud": "api", "sub": "inline", "iat": now, "exp": now + 300}
        return "agent", jwt.encode(claims, INLINE_KEY, algorithm="ES256", headers={"kid": "inline-1"})
    if kind == "c-hmac":
        claims = {"iss": "hmac-issuer", "aud": "api", "sub": "hmac", "iat": now, "exp": now + 300}
        return "agent", compact({"alg": "HS256", "typ": "JWT"}, claims, hs256(HMAC_KEY.encode()))
    if kind == "c-introspection":
        return "agent", idp.opaque(active=True, aud="opaque", sub="svc")
    if kind == "c-access-token":
        return "agent", idp.token(aud="at-api", typ=None, headers={"typ": "at+jwt"}, client_id="cli", jti=uuid.uuid4().hex)
    if kind == "c-basic":
        return "ci", SECRETS["C_BASIC"]
    env = {"c-api-key": "C_APIKEY", "c-bearer": "C_BEARER", "c-jwt": "C_JWT"}[kind]
    return "agent", SECRETS[env]


CALLER_KINDS = ["c-api-key", "c-bearer", "c-jwt", "c-basic", "c-jwks-url", "c-inline-jwks", "c-hmac", "c-introspection", "c-access-token"]


@pytest.mark.parametrize("kind", CALLER_KINDS)
def test_each_caller_kind_authenticates_after_export_reapply_and_restart(restarted, upstream, idp, kind):
    user, secret = caller_token(kind, idp)
    r, marker = call(restarted, user, secret)
    assert r.status_code == 200, r.text
    got = received(upstream, marker)
    assert got.header("Authorization") == f"Bearer {SECRETS['T_BEARER']}"
    assert secret not in str(got.headers)


def injected(kind: str, got, r) -> None:
    auth = got.header("Authorization")
    if kind == "bearer":
        assert auth == f"Bearer {SECRETS['T_BEARER']}"
    elif kind == "apikey-header":
        assert got.header("X-Api-Key") == SECRETS["T_APIKEY_H"]
    elif kind == "apikey-query":
        assert f"api_key={SECRETS['T_APIKEY_Q']}" in got.path
    elif kind == "basic":
        assert auth == "Basic " + base64.b64encode(f"up:{SECRETS['T_BASIC']}".encode()).decode()
    elif kind == "jwt":
        assert auth == f"Bearer {SECRETS['T_JWT']}"
    elif kind == "custom":
        assert got.header("X-Custom") == f"Token {SECRETS['T_CUSTOM']}"
    elif kind == "none":
        assert auth is None and got.header("X-Api-Key") is None
    elif kind in ("oauth-cc", "oauth-rt", "oauth-jb", "oauth-sa"):
        assert auth is not None and auth.startswith("Bearer at-")  # fetched with the stored secrets
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize("kind", TARGET_KINDS)
def test_each_target_credential_kind_injects_after_export_reapply_and_restart(restarted, upstream, kind):
    i = TARGET_KINDS.index(kind)
    r, marker = call(restarted, "agent", SECRETS[f"C_VIA_{i}"])
    assert r.status_code == 200, r.text
    injected(kind, received(upstream, marker), r)


def test_rr_run_names_a_stored_row_that_does_not_load_and_apply_repairs_it(tmp_path, upstream, pki):
    """A restart on a store an older rr (or a hand edit) broke: a one-line reason
    naming the object, no traceback; the next valid apply lets rr run start."""
    from sqlalchemy import update

    from rr_addon.store.db import make_engine
    from rr_addon.store.tables import ProxyCredentialRow
    from rr_addon.testing.home import database_url

    home = tmp_path / "home"
    policy = f"""
targets:
  - {{name: api, hosts: ["127.0.0.1:{upstream.port}"], allow_private_addresses: true, credentials: [{{name: b, kind: bearer, secret: {{env: T_BEARER}}}}]}}
proxies:
  - name: agents
    targets: [{{target: api}}]
    credentials:
      - {{name: c-hmac, auth: jwt_verify, secret: {{env: C_HMAC}}, issuer: hmac-issuer, audience: api}}
"""
    prepare_home(home, policy, env=SECRETS)
    engine = make_engine(database_url(home) or f"sqlite:///{home / 'rr.db'}")
    with engine.begin() as conn:
        # what rr wrote before HMAC credentials round-tripped: no key source at all
        spec = {"name": "c-hmac", "auth": "jwt_verify", "issuer": "hmac-issuer", "audience": "api"}
        conn.execute(update(ProxyCredentialRow).where(ProxyCredentialRow.name == "c-hmac").values(spec=spec))
    engine.dispose()
    broken = ProxyProcess(home, upstream_ca=pki.ca_cert, name="broken")
    assert broken.run_to_exit() != 0
    log = broken.log_text()
    assert "stored proxy credential agents/c-hmac does not load: a jwt_verify credential needs exactly one of 'jwks_url', 'jwks' or 'secret'" in log, log
    assert "Traceback" not in log
    rr_cli(home, "apply", "-f", str(home / "policy.yaml"), env=SECRETS)
    with ProxyProcess(home, upstream_ca=pki.ca_cert, name="repaired") as p:
        p.upstream_port = upstream.port
        r, marker = call(p, *caller_token("c-hmac", None))
        assert r.status_code == 200, r.text
        assert received(upstream, marker).header("Authorization") == f"Bearer {SECRETS['T_BEARER']}"
