"""Configuration models (rr_addon.policy.identity_schema) and building verifiers from them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Annotated, Union

import pytest
from pydantic import Field, TypeAdapter, ValidationError

from rr_addon import identity as ident
from rr_addon.policy import schema
from rr_addon.policy.identity_schema import JwtVerifyCaller, OAuth2Caller, OAuth2ClientCredentials
from rr_addon.identity import Http, Shared, Verified, introspection, jwt_verify, upstream_sources
from rr_addon.identity.jwks import RemoteJwks, StaticKeys
from rr_addon.identity.matching import conflicts, spec_for
from rr_addon.testing.idp import IdP, pooled_key, public_jwk

JWT = {"name": "agent", "auth": "jwt_verify", "issuer": "https://idp/", "audience": "api"}
OAUTH = {"name": "tok", "auth": "oauth2", "introspection_url": "https://idp/introspect", "client_id": "rr", "client_secret": {"env": "S"}}
CC = {"name": "oauth", "kind": "oauth2_client_credentials", "token_url": "https://idp/token", "client_id": "rr", "client_secret": "s"}


def error(model, data) -> str:
    with pytest.raises(ValidationError) as e:
        model.model_validate(data)
    return str(e.value)


# ---------------------------------------------------------------- jwt_verify


def test_jwt_verify_defaults_follow_the_key_source():
    assert JwtVerifyCaller.model_validate({**JWT, "jwks_url": "https://idp/jwks"}).algorithms == ["RS256", "ES256"]
    hs = JwtVerifyCaller.model_validate({**JWT, "secret": {"env": "HMAC"}})
    assert hs.algorithms == ["HS256"] and hs.secret_ref == schema.EnvSecret(env="HMAC")
    c = JwtVerifyCaller.model_validate({**JWT, "jwks_url": "http://127.0.0.1:8080/jwks", "leeway": 5})
    assert (c.leeway, c.require_exp, c.jwks_cache.settings().default_ttl) == (5, True, 600)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({}, "exactly one of 'jwks_url', 'jwks' or 'secret'"),
        ({"jwks_url": "https://idp/jwks", "secret": "x"}, "exactly one of"),
        ({"jwks_url": "http://idp.example/jwks"}, "plain http is only allowed to a loopback address"),
        ({"jwks_url": "ftp://idp/jwks"}, "must be an https:// URL"),
        ({"jwks_url": "https://user:pw@idp/jwks"}, "credentials do not belong in the URL"),
        ({"jwks_url": "https://idp/jwks", "algorithms": ["none"]}, "Input should be 'RS256'"),
        ({"jwks_url": "https://idp/jwks", "algorithms": []}, "at least 1 item"),
        ({"jwks_url": "https://idp/jwks", "algorithms": ["HS256"]}, "cannot be verified with keys from a jwks_url"),
        ({"secret": "x", "algorithms": ["RS256"]}, "may only be HS256, HS384, HS512"),
        ({"jwks": {"keys": []}}, "none of the 0 keys is usable"),
        ({"jwks": {"keys": [public_jwk(pooled_key("EC"), "k1")]}, "algorithms": ["HS256", "ES256"]}, "mixes HMAC"),
        ({"jwks": {"keys": [public_jwk(pooled_key("EC"), "k1")]}, "algorithms": ["HS256"]}, "cannot be verified with an inline jwks"),
        ({"jwks_url": "https://idp/jwks", "required_claims": {"env": "(prod"}}, "invalid RE2 regex '(prod': missing )"),
        ({"jwks_url": "https://idp/jwks", "leeway": 3600}, "less than or equal to 600"),
        ({"jwks_url": "https://idp/jwks", "jwks_cache": {"min_ttl": 10, "max_ttl": 5}}, "min_ttl must not exceed max_ttl"),
        ({"jwks_url": "https://idp/jwks", "jwks_uri": "x"}, "Extra inputs are not permitted"),
    ],
)
def test_jwt_verify_refuses_bad_configuration(extra, message):
    assert message in error(JwtVerifyCaller, {**JWT, **extra})


def _private_jwk(kind: str) -> dict:
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm

    return (ECAlgorithm if kind == "EC" else RSAAlgorithm).to_jwk(pooled_key(kind), as_dict=True)


OCT_MESSAGE = "keys[0] is a symmetric key (kty 'oct'), which is a secret: an inline jwks is stored and exported in clear; give the HMAC key as 'secret:'"


@pytest.mark.parametrize(
    ("model", "data", "message"),
    [
        (JwtVerifyCaller, {**JWT, "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0" * 8}]}, "algorithms": ["HS256"]}, OCT_MESSAGE),
        (JwtVerifyCaller, {**JWT, "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0" * 8, "alg": "HS256"}]}}, OCT_MESSAGE),
        (OAuth2Caller, {**OAUTH, "issuer": "i", "audience": "a", "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0" * 8}]}}, OCT_MESSAGE),
        (JwtVerifyCaller, {**JWT, "jwks": {"keys": [_private_jwk("EC")]}, "algorithms": ["ES256"]}, "keys[0] holds private key material (d)"),
        (
            JwtVerifyCaller,
            {**JWT, "jwks": {"keys": [public_jwk(pooled_key("EC"), "k1"), _private_jwk("RSA")]}},
            "keys[1] holds private key material (d, p, q, dp, dq, qi): an inline jwks is stored and exported in clear, so it may hold public keys only",
        ),
    ],
    ids=["oct-hs256", "oct-default-algorithms", "oct-oauth2", "private-ec", "private-rsa"],
)
def test_inline_jwks_refuses_secret_key_material(model, data, message):
    """Key material that signs is a secret: never accepted into the clear-text, exported configuration."""
    assert message in error(model, data)


def test_jwt_verify_without_a_key_source_keeps_a_stored_hmac_secret():
    """How `rr export` writes an HMAC credential: HS* algorithms, no secret."""
    c = JwtVerifyCaller.model_validate({**JWT, "algorithms": ["HS384"]})
    assert c.uses_hmac_secret and c.secret_ref is None
    assert "exactly one of" in error(JwtVerifyCaller, {**JWT, "algorithms": ["RS256"]})


def test_inline_jwks_is_accepted():
    c = JwtVerifyCaller.model_validate({**JWT, "jwks": {"keys": [public_jwk(pooled_key("EC"), "k1")]}, "algorithms": ["ES256"]})
    assert c.jwks["keys"][0]["kid"] == "k1"


# ---------------------------------------------------------------- oauth2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"introspection_url": None}, "needs 'introspection_url', or 'jwks_url'/'jwks'"),
        ({"client_id": None}, "introspection needs 'client_id'"),
        ({"secret": "x"}, "takes 'client_secret', not 'secret'"),
        ({"jwks_url": "https://idp/jwks"}, "JWT access tokens (RFC 9068) need 'issuer' and 'audience'"),
        ({"scopes": ["a b"]}, "is not a scope"),
        ({"introspection_url": "http://10.0.0.1/i"}, "plain http is only allowed to a loopback address"),
        ({"client_auth": "jwt"}, "Input should be 'basic' or 'post'"),
    ],
)
def test_oauth2_refuses_bad_configuration(extra, message):
    assert message in error(OAuth2Caller, {**OAUTH, **extra})


def test_oauth2_keeps_the_client_secret_out_of_its_repr():
    c = OAuth2Caller.model_validate({**OAUTH, "client_secret": "hunter2", "scopes": ["pay"]})
    assert "hunter2" not in repr(c) and c.secret_ref == "hunter2"


# ---------------------------------------------------------------- oauth2_client_credentials


def test_client_credentials_model():
    c = OAuth2ClientCredentials.model_validate({**CC, "scope": ["read", "write"], "audience": "https://api/"})
    assert (c.scope, c.refresh_skew, c.client_auth, c.needs_secret) == ("read write", 60, "basic", True)
    assert "client_secret" not in repr(c) and c.secret_ref == "s"
    assert "takes 'client_secret', not 'secret'" in error(OAuth2ClientCredentials, {**CC, "secret": "s"})
    assert "plain http" in error(OAuth2ClientCredentials, {**CC, "token_url": "http://idp.example/token"})


def test_models_join_the_existing_discriminated_unions():
    """How the lead will integrate them: one more member of each union."""
    callers = TypeAdapter(
        Annotated[Union[schema.ApiKeyCaller, schema.BasicCaller, JwtVerifyCaller, OAuth2Caller], Field(discriminator="auth")]
    )
    assert isinstance(callers.validate_python({**JWT, "secret": "x" * 32}), JwtVerifyCaller)
    assert isinstance(callers.validate_python(OAUTH), OAuth2Caller)
    targets = TypeAdapter(Annotated[Union[schema.BearerCredential, OAuth2ClientCredentials], Field(discriminator="kind")])
    assert isinstance(targets.validate_python(CC), OAuth2ClientCredentials)


# ---------------------------------------------------------------- building


def test_build_from_models_and_share_across_reloads():
    shared = Shared()
    http = Http()
    url_cred = JwtVerifyCaller.model_validate({**JWT, "jwks_url": "https://idp/jwks"})
    a = jwt_verify.build(url_cred, secret=None, http=http, shared=shared)
    b = jwt_verify.build(url_cred.model_copy(update={"name": "other"}), secret=None, http=http, shared=shared)
    assert isinstance(a.keys, RemoteJwks) and a.keys is b.keys  # one cache per endpoint and settings
    hs = jwt_verify.build(JwtVerifyCaller.model_validate({**JWT, "secret": {"env": "H"}}), secret="k" * 32, http=http, shared=shared)
    assert isinstance(hs.keys, StaticKeys) and hs.path == ident.PATH_HMAC
    with pytest.raises(ValueError, match="at least 32 bytes"):
        jwt_verify.build(JwtVerifyCaller.model_validate({**JWT, "secret": {"env": "H"}}), secret="short", http=http)

    o1 = introspection.build(OAuth2Caller.model_validate(OAUTH), client_secret="s1", http=http, shared=shared)
    o2 = introspection.build(OAuth2Caller.model_validate(OAUTH), client_secret="s1", http=http, shared=shared)
    o3 = introspection.build(OAuth2Caller.model_validate(OAUTH), client_secret="s2", http=http, shared=shared)
    assert o1.introspector is o2.introspector and o1.introspector is not o3.introspector  # a new secret, a new client
    t1 = upstream_sources.build("api", OAuth2ClientCredentials.model_validate(CC), "s", http=http, shared=shared)
    assert len(shared) == 4
    shared.sweep()
    assert len(shared) == 4
    t2 = upstream_sources.build("api", OAuth2ClientCredentials.model_validate(CC), "s", http=http, shared=shared)
    shared.sweep()  # the next configuration only has the target credential
    assert t2 is t1 and len(shared) == 1


def test_models_feed_the_ambiguity_check():
    jwks = {"jwks_url": "https://idp/jwks"}
    ci = JwtVerifyCaller.model_validate({**JWT, **jwks, "name": "ci", "required_claims": {"env": "^ci$"}})
    prod = JwtVerifyCaller.model_validate({**JWT, **jwks, "name": "prod", "required_claims": {"env": "^prod$"}})
    any_env = JwtVerifyCaller.model_validate({**JWT, **jwks, "name": "any"})
    assert conflicts([spec_for("p", ci), spec_for("p", prod)]) == []
    (sentence,) = conflicts([spec_for("p", ci), spec_for("q", any_env)])
    assert sentence.startswith("proxies[p].credentials[ci] and proxies[q].credentials[any] could both match one token")
    rfc9068 = OAuth2Caller.model_validate({**OAUTH, **jwks, "issuer": "https://idp/", "audience": "api"})
    spec = spec_for("p", rfc9068)
    assert spec.local_jwt and spec.introspection_url == "https://idp/introspect"


def test_a_built_oauth2_verifier_works_against_the_idp():
    with IdP() as idp:
        idp.add_key("RSA")
        urls = {"introspection_url": idp.introspection_url, "jwks_url": idp.jwks_url}
        checks = {"issuer": idp.issuer, "audience": "api", "scopes": ["pay"], "algorithms": ["RS256"]}
        cred = OAuth2Caller.model_validate({**OAUTH, **urls, **checks})
        jwt_token = idp.token(scope="pay", headers={"typ": "at+jwt"})
        opaque = idp.opaque(scope="pay read", sub="robot", iss=idp.issuer, aud="api")  # issuer/audience set: checked here too

        async def body():
            http = Http()
            try:
                v = introspection.build(cred, client_secret="rr-client-secret", http=http)
                assert await v.prewarm() is True
                return v.verify_cached(jwt_token), await v.verify(opaque)
            finally:
                await http.aclose()

        local, remote = asyncio.run(body())
    assert isinstance(local, Verified) and local.path == ident.PATH_JWKS
    assert isinstance(remote, Verified) and remote.subject == "robot"


def test_the_models_import_no_network_stack():
    """rr_addon.policy.schema will include these models, and the pure core compiles schema."""
    code = (
        "import sys, rr_addon.policy.identity_schema\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'httpx', 'rich', 'mitmproxy', 'sqlmodel', 'redis'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
