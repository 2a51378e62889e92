"""JWKS caching (rr_addon.identity.jwks): max-age within bounds, rotation,
outages, single-flight — against the local IdP, with a fake monotonic clock."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from rr_addon import identity as ident
from rr_addon.identity import Http, Verified
from rr_addon.identity.jwks import JwksSettings, RemoteJwks, cache_ttl, key_from_jwk, parse_jwks
from rr_addon.identity.jwt_verify import ClaimRules, JwtVerifier
from rr_addon.testing.idp import Clock, run_with_http, IdP, pooled_key, public_jwk

SETTINGS = JwksSettings(min_ttl=60, max_ttl=3600, default_ttl=600, refetch_interval=30, timeout=2)



@pytest.fixture
def idp():
    with IdP(jwks_max_age=300) as server:
        server.add_key("RSA")
        yield server


run = run_with_http


def verifier(idp: IdP, http: Http, clock: Clock, settings: JwksSettings = SETTINGS) -> JwtVerifier:
    keys = RemoteJwks(idp.jwks_url, http=http, settings=settings, clock=clock)
    return JwtVerifier(keys=keys, algorithms=["RS256", "ES256"], rules=ClaimRules(issuer=idp.issuer, audience="api"))


async def settle() -> None:
    """Let background refreshes finish (they are real HTTP requests)."""
    for _ in range(200):
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if not tasks:
            return
        await asyncio.gather(*tasks)


# ---------------------------------------------------------------- single-flight


def test_fifty_concurrent_verifications_with_a_cold_cache_fetch_once(idp):
    idp.slow("jwks", 0.2)  # every verification arrives while the fetch is in flight
    tokens = [idp.token(sub=f"s{i}") for i in range(50)]

    async def body(http):
        v = verifier(idp, http, Clock())
        return await asyncio.gather(*(v.verify(t) for t in tokens))

    results = run(body)
    assert all(isinstance(r, Verified) for r in results)
    assert [r.subject for r in results] == [f"s{i}" for i in range(50)]
    assert idp.count("jwks") == 1


def test_concurrent_unknown_kids_share_one_refetch(idp):
    clock = Clock()

    async def body(http):
        v = verifier(idp, http, clock)
        assert isinstance(await v.verify(idp.token()), Verified)
        new = idp.add_key("EC")
        idp.slow("jwks", 0.1)
        clock.advance(SETTINGS.refetch_interval)
        return await asyncio.gather(*(v.verify(idp.token(kid=new, sub=str(i))) for i in range(20)))

    assert all(isinstance(r, Verified) for r in run(body))
    assert idp.count("jwks") == 2


# ---------------------------------------------------------------- rotation


def test_rotation_refetches_once_and_keeps_the_old_kid_until_max_age(idp):
    clock = Clock()
    old = idp._signer
    old_token = idp.token()

    async def body(http):
        v = verifier(idp, http, clock)
        assert isinstance(await v.verify(old_token), Verified)
        assert idp.count("jwks") == 1

        new = idp.add_key("RSA", pool=1)  # the IdP rotates: new signer, old key withdrawn
        idp.retire(old)
        clock.advance(5)
        assert isinstance(await v.verify(idp.token()), Verified)  # unknown kid -> one refetch
        assert idp.count("jwks") == 2
        assert isinstance(await v.verify(old_token), Verified), "old kid kept until the max-age of its fetch"
        assert idp.count("jwks") == 2

        # Another unknown kid within refetch_interval: refused without asking the IdP.
        stray = idp.add_key("EC", publish=False, sign_with=False)
        assert (await v.verify(idp.token(kid=stray))).reason == ident.UNKNOWN_KID
        assert idp.count("jwks") == 2
        clock.advance(SETTINGS.refetch_interval)
        assert (await v.verify(idp.token(kid=stray))).reason == ident.UNKNOWN_KID
        assert idp.count("jwks") == 3  # once per interval

        clock.advance(300)  # past the max-age of the fetch that last listed the old kid
        result = await v.verify(old_token)
        await settle()
        assert result.reason == ident.UNKNOWN_KID
        assert isinstance(await v.verify(idp.token(kid=new)), Verified)

    run(body)


# ---------------------------------------------------------------- max-age and outages


@pytest.mark.parametrize(
    ("header", "ttl"),
    [
        (None, 600),
        ("max-age=120", 120),
        ("public, max-age=120, must-revalidate", 120),
        ("max-age=5", 60),  # below min_ttl
        ("max-age=999999", 3600),  # above max_ttl
        ("no-store", 60),
        ("no-cache", 60),
        ("max-age=soon", 600),
    ],
)
def test_cache_control_max_age_is_honoured_within_bounds(header, ttl):
    headers = httpx.Headers({"cache-control": header} if header else {})
    assert cache_ttl(headers, SETTINGS) == ttl


def test_keys_are_refreshed_in_the_background_after_max_age(idp):
    clock = Clock()

    async def body(http):
        v = verifier(idp, http, clock)
        token = idp.token()
        await v.verify(token)
        clock.advance(299)
        assert isinstance(v.verify_cached(token), Verified)
        await settle()
        assert idp.count("jwks") == 1  # still fresh
        clock.advance(2)
        assert isinstance(v.verify_cached(token), Verified)  # stale: answered from cache at once...
        await settle()
        assert idp.count("jwks") == 2  # ...while one refresh ran in the background
        assert isinstance(v.verify_cached(token), Verified)
        await settle()
        assert idp.count("jwks") == 2

    run(body)


@pytest.mark.parametrize("outage", ["down", "500", "junk"])
def test_cached_keys_survive_an_endpoint_outage(idp, outage):
    clock = Clock()

    async def body(http):
        v = verifier(idp, http, clock)
        token = idp.token()
        assert isinstance(await v.verify(token), Verified)
        if outage == "down":
            idp.down()
        elif outage == "500":
            idp.fail("jwks", 500)
        else:
            idp.override("jwks", 200, {"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]})
        for _ in range(3):
            clock.advance(3600)  # long past max-age, and past refetch_interval each time
            assert isinstance(v.verify_cached(token), Verified)
            await settle()
        unknown = idp.add_key("EC", publish=False, sign_with=False)
        assert (await v.verify(idp.token(kid=unknown))).reason == ident.UNKNOWN_KID
        assert isinstance(await v.verify(token), Verified)
        return v

    run(body)
    if outage != "down":
        assert idp.count("jwks") >= 4  # it kept trying, once per interval


def test_failed_cold_fetch_is_retried_once_per_interval(idp):
    clock = Clock()
    idp.fail("jwks", 503)

    async def body(http):
        v = verifier(idp, http, clock)
        for _ in range(5):
            assert (await v.verify(idp.token())).reason == ident.KEYS_UNAVAILABLE
        assert idp.count("jwks") == 1
        idp.heal()
        clock.advance(30)
        return await v.verify(idp.token())

    assert isinstance(run(body), Verified)
    assert idp.count("jwks") == 2


def test_a_slow_endpoint_times_out_into_keys_unavailable(idp):
    idp.slow("jwks", 1.0)

    async def body(http):
        v = verifier(idp, http, Clock(), JwksSettings(timeout=0.2))
        return await v.verify(idp.token())

    assert run(body).reason == ident.KEYS_UNAVAILABLE


def test_oversized_jwks_is_refused(idp):
    idp.override("jwks", 200, b'{"keys": [' + b" " * (2 << 20) + b"]}")

    async def body(http):
        return await verifier(idp, http, Clock()).verify(idp.token())

    assert run(body).reason == ident.KEYS_UNAVAILABLE


# ---------------------------------------------------------------- parsing keys


def _jwk(kind: str, **extra):
    return {**public_jwk(pooled_key(kind), "k"), **extra}


@pytest.mark.parametrize(
    ("jwk", "usable"),
    [
        (_jwk("RSA"), True),
        (_jwk("EC"), True),
        (_jwk("Ed25519"), True),
        (_jwk("RSA", use="enc"), False),
        (_jwk("RSA", alg="RSA-OAEP"), False),
        (_jwk("RSA", key_ops=["encrypt"]), False),
        (_jwk("RSA", kid=7), False),
        ({"kty": "oct", "k": "c2VjcmV0"}, False),  # never from a public endpoint
        ({"kty": "RSA", "n": "AQAB", "e": "AQAB"}, False),  # a toy RSA key
        ({"kty": "nope"}, False),
        ("not a dict", False),
    ],
)
def test_unusable_jwks_entries_are_skipped(jwk, usable):
    assert (key_from_jwk(jwk, allow_symmetric=False) is not None) == usable


def test_a_private_jwk_yields_only_its_public_half():
    from jwt.algorithms import RSAAlgorithm

    private = RSAAlgorithm.to_jwk(pooled_key("RSA"), as_dict=True)
    assert key_from_jwk(private, allow_symmetric=False) is None  # key_ops ["sign"]: not for verification
    del private["key_ops"]
    key = key_from_jwk({**private, "kid": "p"}, allow_symmetric=False)
    assert key is not None and not hasattr(key.obj, "private_numbers")


@pytest.mark.parametrize("doc", [{}, {"keys": []}, {"keys": "x"}, [], {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}])
def test_a_jwks_without_usable_keys_is_an_error(doc):
    with pytest.raises(ValueError):
        parse_jwks(doc, allow_symmetric=False)


def test_plain_http_is_only_for_loopback():
    with pytest.raises(ValueError, match="loopback"):
        RemoteJwks("http://idp.example/jwks", http=Http())
    for url in ("http://127.0.0.1:1/jwks", "http://localhost/jwks", "http://[::1]:8/jwks", "https://idp.example/jwks"):
        RemoteJwks(url, http=Http())
