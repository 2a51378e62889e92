"""OAuth 2.0 access tokens (rr_addon.identity.introspection) against the local IdP."""

from __future__ import annotations

import asyncio
import time

import pytest

from rr_addon import identity as ident
from rr_addon.identity import Http, Refused, Verified
from rr_addon.identity.introspection import Introspector, OAuth2Verifier
from rr_addon.identity.jwks import RemoteJwks
from rr_addon.identity.jwt_verify import ACCESS_TOKEN_TYPES, ClaimRules, JwtVerifier
from rr_addon.testing.idp import Clock, run_with_http, IdP



run = run_with_http


def introspecting(idp: IdP, http: Http, *, mono: Clock | None = None, wall: Clock | None = None, secret="rr-client-secret", **kw):
    opts = {k: kw.pop(k) for k in ("max_ttl", "negative_ttl", "timeout", "client_auth", "max_entries") if k in kw}
    introspector = Introspector(
        idp.introspection_url, "rr", secret, http=http, clock=mono or time.monotonic, wall=wall or time.time, **opts
    )
    rules = ClaimRules(issuer=kw.pop("issuer", None), audience=kw.pop("audience", None), require_exp=False, **kw)
    return OAuth2Verifier(rules=rules, introspector=introspector, clock=wall or time.time)


def verify(idp: IdP, tokens: list[str], **kw) -> list:
    async def body(http):
        v = introspecting(idp, http, **kw)
        return [await v.verify(t) for t in tokens]

    return run(body)


# ---------------------------------------------------------------- introspection


def test_active_token_is_accepted_with_its_claims(idp):
    token = idp.opaque(sub="svc", iss="https://idp/", scope="read write", client_id="c1", exp=int(time.time()) + 60)
    (result,) = verify(idp, [token])
    assert isinstance(result, Verified)
    assert (result.subject, result.issuer, result.path) == ("svc", "https://idp/", ident.PATH_INTROSPECTION)
    assert result.claims["client_id"] == "c1"
    assert result.audit() == {"subject": "svc", "issuer": "https://idp/", "verification": "introspection"}


@pytest.mark.parametrize("token", ["inactive", "unknown"])
def test_inactive_tokens_are_refused(idp, token):
    token = idp.opaque(active=False, sub="x") if token == "inactive" else "never-issued"
    (result,) = verify(idp, [token])
    assert result == Refused(ident.INACTIVE, ident.PATH_INTROSPECTION)


def test_expired_answer_is_refused_even_if_the_server_says_active(idp):
    (result,) = verify(idp, [idp.opaque(sub="x", exp=int(time.time()) - 3600)], leeway=0)
    assert result.reason == ident.INACTIVE  # the IdP itself says inactive
    idp_token = idp.opaque(sub="x")
    idp._opaque[idp_token]["exp"] = "soon"
    (result,) = verify(idp, [idp_token])
    assert (result.reason, result.detail) == (ident.CLAIM_INVALID, "exp")


@pytest.mark.parametrize(
    ("kw", "claims", "reason"),
    [
        ({"scopes": ["pay"]}, {"scope": "read pay"}, None),
        ({"scopes": ["pay", "read"]}, {"scope": "read"}, ident.INSUFFICIENT_SCOPE),
        ({"scopes": ["pay"]}, {}, ident.INSUFFICIENT_SCOPE),
        ({"audience": "api"}, {"aud": ["x", "api"]}, None),
        ({"audience": "api"}, {"aud": "x"}, ident.WRONG_AUDIENCE),
        ({"issuer": "https://idp/"}, {"iss": "https://other/"}, ident.WRONG_ISSUER),
        ({"required_claims": {"team": "^billing$"}}, {"team": "billing"}, None),
        ({"required_claims": {"team": "^billing$"}}, {"team": "ops"}, ident.CLAIM_INVALID),
    ],
)
def test_scope_audience_issuer_and_claim_checks(idp, kw, claims, reason):
    (result,) = verify(idp, [idp.opaque(sub="s", **claims)], **kw)
    if reason is None:
        assert isinstance(result, Verified), result
    else:
        assert (result.reason, result.path) == (reason, ident.PATH_INTROSPECTION)


def test_client_authentication_in_the_form_works_and_a_wrong_secret_fails_closed(idp):
    token = idp.opaque(sub="s")
    assert isinstance(verify(idp, [token], client_auth="post")[0], Verified)
    assert idp.received[-1][1]["client_id"] == "rr"
    (result,) = verify(idp, [token], secret="wrong")
    assert result.reason == ident.INTROSPECTION_UNAVAILABLE


def test_client_secret_is_form_encoded_for_basic_auth(idp):
    idp.clients["rr"] = "p@ss:w/rd+é"
    assert isinstance(verify(idp, [idp.opaque(sub="s")], secret="p@ss:w/rd+é")[0], Verified)


# ---------------------------------------------------------------- fail closed


@pytest.mark.parametrize("outage", ["down", "500", "not json", "json list", "slow"])
def test_endpoint_trouble_fails_closed_and_is_not_cached(idp, outage):
    token = idp.opaque(sub="s")
    if outage == "down":
        idp.down()
    elif outage == "500":
        idp.fail("introspect", 500)
    elif outage == "not json":
        idp.override("introspect", 200, b"<html>")
    elif outage == "json list":
        idp.override("introspect", 200, [{"active": True}])
    else:
        idp.slow("introspect", 1.0)

    async def body(http):
        v = introspecting(idp, http, timeout=0.2)
        first = await v.verify(token)
        assert v.verify_cached(token) is None  # failures are not cached
        idp.heal()
        idp.up()
        return first, await v.verify(token)

    failed, later = run(body)
    assert failed == Refused(ident.INTROSPECTION_UNAVAILABLE, ident.PATH_INTROSPECTION, "no usable answer from the endpoint")
    assert isinstance(later, Verified)


# ---------------------------------------------------------------- caching


def test_active_answers_are_cached_until_exp(idp):
    wall, mono = Clock(time.time()), Clock(1000.0)
    token = idp.opaque(sub="s", exp=int(wall.t) + 100)

    async def body(http):
        v = introspecting(idp, http, mono=mono, wall=wall, max_ttl=300)
        assert isinstance(await v.verify(token), Verified)
        mono.advance(90)
        wall.advance(90)
        assert isinstance(v.verify_cached(token), Verified)
        assert idp.count("introspect") == 1
        mono.advance(15)
        wall.advance(15)
        assert v.verify_cached(token) is None  # past exp: ask again

    run(body)


def test_active_answers_are_cached_at_most_max_ttl(idp):
    mono = Clock(1000.0)
    token = idp.opaque(sub="s", exp=int(time.time()) + 86400)

    async def body(http):
        v = introspecting(idp, http, mono=mono, max_ttl=30)
        await v.verify(token)
        mono.advance(29)
        assert isinstance(v.verify_cached(token), Verified)
        mono.advance(2)
        assert v.verify_cached(token) is None
        assert isinstance(await v.verify(token), Verified)
        assert idp.count("introspect") == 2

    run(body)


def test_inactive_answers_are_cached_briefly(idp):
    mono = Clock(1000.0)

    async def body(http):
        v = introspecting(idp, http, mono=mono, negative_ttl=10)
        for _ in range(5):
            assert (await v.verify("junk")).reason == ident.INACTIVE
        assert idp.count("introspect") == 1
        mono.advance(11)
        assert v.verify_cached("junk") is None

    run(body)


def test_cache_keys_are_digests_and_the_cache_is_bounded(idp):
    tokens = [idp.opaque(sub=str(i)) for i in range(5)]

    async def body(http):
        v = introspecting(idp, http, max_entries=3)
        for t in tokens:
            await v.verify(t)
        return v.introspector

    introspector = run(body)
    assert len(introspector._cache) == 3
    assert all(isinstance(k, bytes) and len(k) == 32 for k in introspector._cache)
    dump = repr(introspector) + repr(introspector.__dict__)
    assert not any(t in dump for t in tokens)
    assert "rr-client-secret" not in repr(introspector)


def test_fifty_concurrent_introspections_of_one_token_send_one_request(idp):
    idp.slow("introspect", 0.2)
    token = idp.opaque(sub="s")

    async def body(http):
        v = introspecting(idp, http)
        return await asyncio.gather(*(v.verify(token) for _ in range(50)))

    results = run(body)
    assert all(isinstance(r, Verified) for r in results)
    assert idp.count("introspect") == 1


def test_concurrent_introspections_when_down_all_fail_closed(idp):
    idp.slow("introspect", 0.1)
    idp.fail("introspect", 502)

    async def body(http):
        v = introspecting(idp, http)
        return await asyncio.gather(*(v.verify("t") for _ in range(20)))

    assert {r.reason for r in run(body)} == {ident.INTROSPECTION_UNAVAILABLE}
    assert idp.count("introspect") == 1


# ---------------------------------------------------------------- RFC 9068 JWT access tokens


def jwt_access(idp: IdP, http: Http, introspection: bool) -> OAuth2Verifier:
    rules = ClaimRules(issuer=idp.issuer, audience="api", scopes=["pay"])
    jwt = JwtVerifier(keys=RemoteJwks(idp.jwks_url, http=http), algorithms=["RS256"], rules=rules, token_types=ACCESS_TOKEN_TYPES)
    intro = Introspector(idp.introspection_url, "rr", "rr-client-secret", http=http) if introspection else None
    return OAuth2Verifier(rules=ClaimRules(issuer=None, audience=None, require_exp=False), introspector=intro, jwt=jwt)


def test_jwt_access_tokens_are_verified_locally(idp):
    good = idp.token(scope="pay", headers={"typ": "at+jwt"})
    id_token = idp.token(scope="pay")  # typ JWT: an ID token is not an access token
    no_scope = idp.token(headers={"typ": "application/at+jwt"})
    opaque = idp.opaque(sub="s")

    async def body(http):
        v = jwt_access(idp, http, introspection=False)
        return [await v.verify(t) for t in (good, id_token, no_scope, opaque)]

    good_r, id_r, scope_r, opaque_r = run(body)
    assert isinstance(good_r, Verified) and good_r.path == ident.PATH_JWKS
    assert id_r.reason == ident.WRONG_TOKEN_TYPE
    assert scope_r.reason == ident.INSUFFICIENT_SCOPE
    assert opaque_r.reason == ident.MALFORMED_TOKEN
    assert idp.count("introspect") == 0


def test_with_both_paths_opaque_tokens_are_introspected_and_jwts_verified_locally(idp):
    jwt_token = idp.token(scope="pay", headers={"typ": "at+jwt"})
    opaque = idp.opaque(sub="s")

    async def body(http):
        v = jwt_access(idp, http, introspection=True)
        return await v.verify(jwt_token), await v.verify(opaque)

    local, remote = run(body)
    assert local.path == ident.PATH_JWKS and remote.path == ident.PATH_INTROSPECTION
    assert idp.count("introspect") == 1
