"""JWT verification (rr_addon.identity.jwt_verify) against the local IdP."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time

import pytest
from cryptography.hazmat.primitives import serialization

from rr_addon import identity as ident
from rr_addon.identity import Http, Refused, Verified
from rr_addon.identity.jwks import JwksSettings, RemoteJwks, hmac_keys, inline_keys
from rr_addon.identity.jwt_verify import ClaimRules, JwtVerifier, claim_strings, parse
from rr_addon.testing.certs import make_pki
from rr_addon.testing.idp import IdP, compact, hs256, public_jwk, pooled_key

SECRET = "s" * 32


def run(body, verify: ssl.SSLContext | bool = True):
    async def main():
        http = Http(verify=verify)
        try:
            return await body(http)
        finally:
            await http.aclose()

    return asyncio.run(main())


def remote(idp: IdP, http: Http, algorithms=("RS256", "ES256", "EdDSA"), **rules) -> JwtVerifier:
    rules = {"issuer": idp.issuer, "audience": "api", **rules}
    return JwtVerifier(keys=RemoteJwks(idp.jwks_url, http=http), algorithms=algorithms, rules=ClaimRules(**rules))


def verify_all(idp: IdP, tokens: list[str], **kw) -> list:
    async def body(http):
        v = remote(idp, http, **kw)
        return [await v.verify(t) for t in tokens]

    return run(body)


# ---------------------------------------------------------------- accepted


@pytest.mark.parametrize("kind", ["RSA", "EC", "Ed25519"])
def test_accepts_public_key_tokens_from_jwks(idp, kind):
    kid = idp.add_key(kind)
    (result,) = verify_all(idp, [idp.token(sub="svc-1", scope="a b")])
    assert isinstance(result, Verified), result
    assert result.subject == "svc-1"
    assert result.issuer == idp.issuer
    assert result.path == ident.PATH_JWKS
    assert result.claims["scope"] == "a b"
    assert parse(idp.token()).kid == kid


def test_accepts_hs256_with_a_secret():
    claims = {"iss": "me", "aud": "api", "sub": "x", "exp": time.time() + 60}
    token = compact({"alg": "HS256", "typ": "JWT"}, claims, hs256(SECRET.encode()))
    v = JwtVerifier(keys=hmac_keys(SECRET, ["HS256"]), algorithms=["HS256"], rules=ClaimRules(issuer="me", audience="api"))
    result = v.verify_cached(token)
    assert isinstance(result, Verified) and result.path == ident.PATH_HMAC
    bad = compact({"alg": "HS256"}, claims, hs256(b"t" * 32))
    assert v.verify_cached(bad) == Refused(ident.BAD_SIGNATURE, ident.PATH_HMAC)


def test_accepts_keys_from_an_inline_jwks():
    key = pooled_key("EC")
    v = JwtVerifier(
        keys=inline_keys({"keys": [public_jwk(key, "k1")]}), algorithms=["ES256"], rules=ClaimRules(issuer="me", audience="api")
    )
    import jwt

    token = jwt.encode({"iss": "me", "aud": "api", "exp": time.time() + 60}, key, "ES256", headers={"kid": "k1"})
    result = v.verify_cached(token)
    assert isinstance(result, Verified) and result.path == ident.PATH_INLINE_JWKS


def test_audience_list_containing_ours_is_accepted(idp):
    (result,) = verify_all(idp, [idp.token(aud=["other", "api"])])
    assert isinstance(result, Verified)


def test_leeway_tolerates_small_clock_skew(idp):
    late, early = idp.token(exp_in=-30), idp.token(nbf=int(time.time()) + 30)
    assert all(isinstance(r, Verified) for r in verify_all(idp, [late, early], leeway=60))
    assert [r.reason for r in verify_all(idp, [late, early], leeway=0)] == [ident.EXPIRED, ident.NOT_YET_VALID]


def test_verified_value_exposes_claims_and_an_audit_summary_without_the_token(idp):
    token = idp.token(sub="alice", roles=["admin"])
    (result,) = verify_all(idp, [token])
    assert result.audit() == {"subject": "alice", "issuer": idp.issuer, "verification": "jwks"}
    assert token not in repr(result) and token.split(".")[2] not in repr(result)
    with pytest.raises(TypeError):
        result.claims["sub"] = "mallory"  # read-only for the rules engine
    assert repr(parse(token)) == f"ParsedToken(alg='RS256', kid={parse(token).kid!r})"


# ---------------------------------------------------------------- refused


def _tamper(token: str) -> str:
    h, p, s = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    claims["sub"] = "root"
    return ".".join([h, base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode(), s])


def _rsa_public_pem(idp: IdP) -> bytes:
    return idp.private_key(idp._signer).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


REFUSALS = {
    "expired": (lambda i: i.token(exp_in=-3600), ident.EXPIRED, None),
    "not yet valid (nbf)": (lambda i: i.token(nbf=int(time.time()) + 3600), ident.NOT_YET_VALID, "nbf"),
    "issued in the future (iat)": (lambda i: i.token(iat=int(time.time()) + 3600), ident.NOT_YET_VALID, "iat"),
    "wrong issuer": (lambda i: i.token(iss="https://evil.example/"), ident.WRONG_ISSUER, None),
    "wrong audience": (lambda i: i.token(aud="other"), ident.WRONG_AUDIENCE, None),
    "no audience": (lambda i: i.token(aud=None), ident.WRONG_AUDIENCE, None),
    "alg none": (lambda i: compact({"alg": "none", "kid": i._signer}, i.claims()), ident.ALGORITHM_NOT_ALLOWED, "none"),
    "HS256 signed with the RSA public key": (
        lambda i: compact({"alg": "HS256", "kid": i._signer}, i.claims(), hs256(_rsa_public_pem(i))),
        ident.ALGORITHM_NOT_ALLOWED,
        "HS256",
    ),
    "unknown kid": (lambda i: i.token(kid=i.add_key("RSA", publish=False, sign_with=False, pool=1)), ident.UNKNOWN_KID, None),
    "tampered payload": (lambda i: _tamper(i.token()), ident.BAD_SIGNATURE, None),
    "signature stripped": (lambda i: i.token().rsplit(".", 1)[0] + ".", ident.BAD_SIGNATURE, None),
    "garbage": (lambda i: "not-a-jwt", ident.MALFORMED_TOKEN, None),
    "two segments": (lambda i: "eyJhbGciOiJSUzI1NiJ9.e30", ident.MALFORMED_TOKEN, None),
    "padded base64": (lambda i: i.token().replace(".", "=.", 1), ident.MALFORMED_TOKEN, None),
    "crit header": (lambda i: i.token(headers={"crit": ["exp"]}), ident.MALFORMED_TOKEN, None),
    "no exp": (lambda i: i.token(exp_in=None), ident.CLAIM_MISSING, "exp"),
    "exp not a number": (lambda i: i.token(exp="tomorrow"), ident.CLAIM_INVALID, "exp"),
}


@pytest.mark.parametrize("case", list(REFUSALS), ids=list(REFUSALS))
def test_refusals_carry_fixed_reasons(idp, case):
    make, reason, detail = REFUSALS[case]
    (result,) = verify_all(idp, [make(idp)], algorithms=("RS256",))
    assert isinstance(result, Refused)
    assert (result.reason, result.path) == (reason, ident.PATH_JWKS)
    if detail is not None:
        assert result.detail == detail


def test_hs256_with_rsa_public_key_fails_even_when_hs256_is_allowed(idp):
    """The key type decides: an RSA key never verifies an HMAC, whatever the allow-list."""
    token = compact({"alg": "HS256", "kid": idp._signer}, idp.claims(), hs256(_rsa_public_pem(idp)))
    (result,) = verify_all(idp, [token], algorithms=("RS256", "HS256"))
    assert result.reason == ident.ALGORITHM_NOT_ALLOWED
    assert result.detail == "HS256 does not fit the RSA key"


def test_rs256_token_naming_an_ec_key_is_refused(idp):
    ec_kid = idp.add_key("EC", sign_with=False)
    rsa_token = idp.token()  # signed by the RSA key, header names the EC key below
    forged = idp.sign(idp.claims(), kid=idp._signer, headers={"kid": ec_kid})
    results = verify_all(idp, [rsa_token, forged], algorithms=("RS256", "ES256"))
    assert isinstance(results[0], Verified)
    assert results[1].reason == ident.ALGORITHM_NOT_ALLOWED


def test_nan_and_infinity_are_not_json(idp):
    h = base64.urlsafe_b64encode(json.dumps({"alg": "RS256"}).encode()).rstrip(b"=").decode()
    p = base64.urlsafe_b64encode(b'{"exp": Infinity}').rstrip(b"=").decode()
    assert parse(f"{h}.{p}.AAAA") is None


def test_required_claims_are_rre2_regexes(idp):
    tokens = [idp.token(env="prod"), idp.token(env="ci"), idp.token(), idp.token(env=["x", "prod"]), idp.token(env=5)]
    results = verify_all(idp, tokens, required_claims={"env": "^prod$"})
    assert isinstance(results[0], Verified)
    assert (results[1].reason, results[1].detail) == (ident.CLAIM_INVALID, "env")
    assert (results[2].reason, results[2].detail) == (ident.CLAIM_MISSING, "env")
    assert isinstance(results[3], Verified)  # a list matches when any element does
    assert results[4].reason == ident.CLAIM_INVALID


@pytest.mark.parametrize(
    ("value", "strings"),
    [("a", ["a"]), (5, ["5"]), (True, ["true"]), (None, ["null"]), (["a", 1], ["a", "1"]), ({"k": "é"}, ['{"k":"é"}'])],
)
def test_claim_strings_spell_values_like_the_rules_engine(value, strings):
    assert claim_strings(value) == strings


def test_hmac_secret_must_be_long_enough():
    with pytest.raises(ValueError, match="at least 32 bytes"):
        hmac_keys("short", ["HS256"])
    with pytest.raises(ValueError, match="at least 64 bytes"):
        hmac_keys(SECRET, ["HS512"])


def test_keys_unavailable_when_the_jwks_endpoint_is_down_at_start(idp):
    idp.down()
    (result,) = verify_all(idp, [idp.token()])
    assert (result.reason, result.path) == (ident.KEYS_UNAVAILABLE, ident.PATH_JWKS)


def test_https_jwks_with_a_private_ca(tmp_path):
    pki = make_pki(tmp_path)
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    with IdP(pki=pki) as idp:
        idp.add_key("EC")
        assert idp.jwks_url.startswith("https://")

        async def body(http):
            return await remote(idp, http).verify(idp.token())

        assert isinstance(run(body, verify=ctx), Verified)
        # Without the CA the certificate is refused: no keys, no acceptance.
        result = run(body)
        assert result.reason == ident.KEYS_UNAVAILABLE


def test_verify_cached_needs_no_loop_once_keys_are_cached(idp):
    """The sync fast path: after prewarm, verification is a plain call."""

    async def body(http):
        v = remote(idp, http)
        assert v.verify_cached(idp.token()) is None  # cold: the glue must await
        assert await v.prewarm() is True
        return v

    v = run(body)
    assert isinstance(v.verify_cached(idp.token()), Verified)


def test_settings_are_the_documented_defaults():
    assert JwksSettings() == JwksSettings(60.0, 86400.0, 600.0, 30.0, 5.0)
