"""Upstream OAuth client-credentials tokens (rr_addon.identity.client_credentials)
against the local IdP's token endpoint, with a fake monotonic clock."""

from __future__ import annotations

import asyncio

import pytest

from rr_addon import identity as ident
from rr_addon.identity import Http
from rr_addon.identity.client_credentials import ClientCredentialsToken, UpstreamTokenError
from rr_addon.testing.idp import Clock, run_with_http, IdP



@pytest.fixture
def idp():
    with IdP(token_ttl=100) as server:
        yield server


run = run_with_http


def source(idp: IdP, http: Http, clock: Clock, **kw) -> ClientCredentialsToken:
    kw = {"refresh_skew": 10, "failure_backoff": 2, "timeout": 2, **kw}
    return ClientCredentialsToken(idp.token_url, "rr", kw.pop("secret", "rr-client-secret"), http=http, clock=clock, **kw)


async def fetch(src: ClientCredentialsToken):
    try:
        return await src.token()
    except UpstreamTokenError as e:
        return e


def test_fetched_on_first_use_and_cached(idp):
    clock = Clock()

    async def body(http):
        src = source(idp, http, clock, scope="read write", audience="https://api.example")
        assert src.token_nowait() is None
        assert idp.count("token") == 0  # nothing before first use
        first = await src.token()
        assert src.token_nowait() == first
        assert await src.token() == first
        return first

    token = run(body)
    assert token.startswith("at-")
    assert idp.count("token") == 1
    assert idp.received[-1] == (
        "token",
        {"grant_type": "client_credentials", "scope": "read write", "audience": "https://api.example"},
    )


def test_client_authentication_in_the_form(idp):
    async def body(http):
        return await source(idp, http, Clock(), client_auth="post").token()

    run(body)
    form = idp.received[-1][1]
    assert (form["client_id"], form["client_secret"]) == ("rr", "rr-client-secret")


def test_refreshed_across_expiry_under_concurrent_load_with_one_request_per_refresh(idp):
    clock = Clock()
    idp.slow("token", 0.05)  # all 50 callers arrive while the refresh is in flight

    async def body(http):
        src = source(idp, http, clock)
        seen = []
        for cycle in range(4):
            tokens = await asyncio.gather(*(src.token() for _ in range(50)))
            assert len(set(tokens)) == 1
            assert idp.count("token") == cycle + 1, "exactly one token request per refresh"
            seen.append(tokens[0])
            clock.advance(85)  # ttl 100, skew 10: still fresh at 85...
            assert src.token_nowait() == tokens[0]
            clock.advance(6)  # ...due at 91, before the token expires at 100
            assert src.token_nowait() is None
        return seen

    seen = run(body)
    assert len(set(seen)) == 4


def test_a_token_shorter_lived_than_the_skew_is_refreshed_at_half_life(idp):
    idp.token_ttl = 10
    clock = Clock()

    async def body(http):
        src = source(idp, http, clock, refresh_skew=60)
        first = await src.token()
        clock.advance(4)
        assert await src.token() == first
        clock.advance(2)
        assert await src.token() != first

    run(body)
    assert idp.count("token") == 2


@pytest.mark.parametrize(
    ("trouble", "reason", "detail"),
    [
        ("down", ident.TOKEN_ENDPOINT_UNAVAILABLE, "unreachable"),
        ("slow", ident.TOKEN_ENDPOINT_UNAVAILABLE, "unreachable"),
        ("503", ident.TOKEN_ENDPOINT_UNAVAILABLE, "HTTP 503"),
        ("bad secret", ident.TOKEN_ENDPOINT_REFUSED, "HTTP 401 invalid_client"),
        ("not json", ident.TOKEN_RESPONSE_INVALID, "not a JSON object"),
        ("no access_token", ident.TOKEN_RESPONSE_INVALID, "access_token missing or not header-safe"),
        ("header injection", ident.TOKEN_RESPONSE_INVALID, "access_token missing or not header-safe"),
        ("mac token", ident.TOKEN_RESPONSE_INVALID, "token_type is not Bearer"),
    ],
)
def test_endpoint_failures_raise_a_specific_error(idp, trouble, reason, detail):
    secret = "rr-client-secret"
    if trouble == "down":
        idp.down()
    elif trouble == "slow":
        idp.slow("token", 1.0)
    elif trouble == "503":
        idp.fail("token", 503)
    elif trouble == "bad secret":
        secret = "wrong"
    elif trouble == "not json":
        idp.override("token", 200, b"ok")
    elif trouble == "no access_token":
        idp.override("token", 200, {"token_type": "Bearer"})
    elif trouble == "header injection":
        idp.override("token", 200, {"access_token": "a\r\nX-Evil: 1", "token_type": "Bearer"})
    else:
        idp.override("token", 200, {"access_token": "abc", "token_type": "mac"})

    async def body(http):
        return await fetch(source(idp, http, Clock(), secret=secret, timeout=0.2))

    error = run(body)
    assert isinstance(error, UpstreamTokenError)
    assert (error.reason, error.detail) == (reason, detail)
    assert "rr-client-secret" not in str(error) and "wrong" not in str(error)


def test_failed_refresh_keeps_the_unexpired_token_then_fails(idp):
    clock = Clock()

    async def body(http):
        src = source(idp, http, clock)
        first = await src.token()
        idp.fail("token", 500)
        clock.advance(93)  # due for refresh (at 90), still valid (until 100 less the 5 s margin)
        assert await src.token() == first
        clock.advance(2)  # inside the safety margin: no longer used
        error = await fetch(src)
        assert isinstance(error, UpstreamTokenError) and error.code == "upstream-auth-unavailable"
        clock.advance(10)  # expired: no token to fall back on
        error = await fetch(src)
        assert isinstance(error, UpstreamTokenError) and error.reason == ident.TOKEN_ENDPOINT_UNAVAILABLE
        idp.heal()
        assert isinstance(await fetch(src), UpstreamTokenError), "within failure_backoff: not asked again"
        requests = idp.count("token")
        clock.advance(2)
        second = await src.token()
        assert second != first and idp.count("token") == requests + 1

    run(body)


def test_fifty_concurrent_callers_share_one_failing_request(idp):
    idp.slow("token", 0.05)
    idp.fail("token", 503)

    async def body(http):
        src = source(idp, http, Clock())
        return await asyncio.gather(*(fetch(src) for _ in range(50)))

    errors = run(body)
    assert all(isinstance(e, UpstreamTokenError) for e in errors)
    assert idp.count("token") == 1


def test_the_token_stays_out_of_reprs_and_the_flow(idp):
    async def body(http):
        src = source(idp, http, Clock())
        return src, await src.token()

    src, token = run(body)
    assert token not in repr(src) and "rr-client-secret" not in repr(src)
    assert token not in repr(src.__dict__["_token"])
    injection = src.injection("billing", "oauth", token)
    assert injection.headers == (("Authorization", f"Bearer {token}", "Bearer [rr:billing/oauth]"),)
    assert injection.secrets == (token,)
    assert injection.label == "billing/oauth"


def test_expires_in_as_a_string_or_missing(idp):
    clock = Clock()
    idp.override("token", 200, {"access_token": "abc", "token_type": "bearer", "expires_in": "30"})

    async def body(http):
        src = source(idp, http, clock, refresh_skew=5)
        await src.token()
        clock.advance(24)
        assert src.token_nowait() == "abc"
        clock.advance(2)
        assert src.token_nowait() is None
        idp.override("token", 200, {"access_token": "def"})  # no expires_in, no token_type
        assert await src.token() == "def"
        clock.advance(290)
        assert src.token_nowait() == "def"  # default ttl 300, skew 5

    run(body)
