"""Identity fetches under attack: lanes per purpose, whole-request deadlines,
the introspection gate, and a refetch slot a fetch that never left does not spend.

Against the local IdP on loopback. No wall-clock assertions: deadlines are
checked by the refusal they end in, and by the IdP seeing the connection
closed, each bounded by a generous test timeout."""

from __future__ import annotations

import asyncio
import time

import pytest

from rr_addon import identity as ident
from rr_addon.identity import Http, Refused, Verified
from rr_addon.identity.client_credentials import ClientCredentialsToken, UpstreamTokenError
from rr_addon.identity.gate import CLIENT, Gate
from rr_addon.identity.introspection import Introspector
from rr_addon.identity.jwks import JwksSettings, RemoteJwks
from rr_addon.testing.idp import Clock, IdP, run_with_http

GENEROUS = 30  # seconds: only a hang reaches this


@pytest.fixture
def idp():
    with IdP() as server:
        server.add_key("RSA")
        yield server


async def eventually(check, timeout: float = GENEROUS) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


def introspector(idp: IdP, http: Http, gate: Gate | None = None, **kw) -> Introspector:
    if gate is not None:
        kw["gate"] = gate
    return Introspector(idp.introspection_url, "rr", "rr-client-secret", http=http, **kw)


# ---------------------------------------------------------------- whole-request deadline


@pytest.mark.parametrize("endpoint", ["jwks", "introspect", "token"])
def test_a_dripping_endpoint_cannot_hold_a_fetch_past_its_timeout(idp, endpoint):
    """Per-read timeouts let a byte every 0.25 s hold a fetch for minutes; the deadline covers the whole request."""
    idp.drip(endpoint, 0.25)

    async def body(http):
        async with asyncio.timeout(GENEROUS):
            if endpoint == "jwks":
                jwks = RemoteJwks(idp.jwks_url, http=http, settings=JwksSettings(timeout=1))
                await jwks.refresh()
                outcome = jwks.lookup("any", "RS256", allow_fetch=False)
                assert outcome.reason == ident.KEYS_UNAVAILABLE
            elif endpoint == "introspect":
                outcome = await introspector(idp, http, timeout=1).introspect("op-unknown")
                assert outcome == Refused(ident.INTROSPECTION_UNAVAILABLE, ident.PATH_INTROSPECTION, "no usable answer from the endpoint")
            else:
                source = ClientCredentialsToken(idp.token_url, "rr", "rr-client-secret", http=http, timeout=1)
                with pytest.raises(UpstreamTokenError) as e:
                    await source.token()
                assert e.value.reason == ident.TOKEN_ENDPOINT_UNAVAILABLE
        await eventually(lambda: idp.hangups(endpoint) >= 1)  # rr closed the connection: the IdP's next byte failed

    run_with_http(body)


# ---------------------------------------------------------------- lanes


def test_introspections_held_by_a_slow_endpoint_never_starve_a_jwks_refresh(idp):
    """25 unknown tokens hang at the introspection endpoint; a JWKS refresh on the same client still gets its keys."""
    idp.hold("introspect")
    kid = idp.add_key("RSA")

    async def body(http):
        intro = introspector(idp, http, timeout=20)  # no gate: the lanes alone must isolate
        pending = [asyncio.ensure_future(intro.introspect(f"junk-{n}")) for n in range(25)]
        await eventually(lambda: idp.waiting("introspect") >= 16)  # the introspection lane is full
        jwks = RemoteJwks(idp.jwks_url, http=http, settings=JwksSettings(timeout=2))
        await jwks.refresh()
        found = jwks.lookup(kid, "RS256", allow_fetch=False)
        idp.release("introspect")
        await asyncio.gather(*pending)
        return found

    found = run_with_http(body)
    assert getattr(found, "kid", found) == kid


# ---------------------------------------------------------------- the introspection gate


def test_unknown_tokens_are_capped_per_client_and_overall(idp):
    idp.hold("introspect")
    gate = Gate(total=3, per_client=2)

    async def ask(intro: Introspector, client: str, token: str):
        CLIENT.set(client)  # a task's own context: as rr_addon.identity.service sets it per request
        return await intro.introspect(token)

    async def body(http):
        intro = introspector(idp, http, gate, timeout=20)
        a1 = asyncio.ensure_future(ask(intro, "10.0.0.1", "a1"))
        a2 = asyncio.ensure_future(ask(intro, "10.0.0.1", "a2"))
        await eventually(lambda: idp.waiting("introspect") == 2)
        third_from_a = await ask(intro, "10.0.0.1", "a3")  # refused at once, never sent
        b1 = asyncio.ensure_future(ask(intro, "10.0.0.2", "b1"))
        await eventually(lambda: idp.waiting("introspect") == 3)
        from_c = await ask(intro, "10.0.0.3", "c1")  # the overall cap
        joined = asyncio.ensure_future(ask(intro, "10.0.0.3", "a1"))  # joins a1's request: needs no slot
        await asyncio.sleep(0.1)
        sent_while_full = idp.count("introspect")
        idp.release("introspect")
        results = await asyncio.gather(a1, a2, b1, joined)
        after = await ask(intro, "10.0.0.1", "a4")  # slots are given back when the endpoint answers
        return third_from_a, from_c, results, sent_while_full, after, gate

    third_from_a, from_c, results, sent_while_full, after, gate = run_with_http(body)
    busy = Refused(ident.INTROSPECTION_BUSY, ident.PATH_INTROSPECTION, "retry shortly")
    assert third_from_a == busy and from_c == busy
    assert all(r.reason == ident.INACTIVE for r in results)
    assert after.reason == ident.INACTIVE
    assert sent_while_full == 3
    assert (gate.in_flight, gate.refused) == (0, 2)


def test_inactive_answers_are_cached_so_a_repeated_junk_token_is_asked_once(idp):
    async def body(http):
        intro = introspector(idp, http, Gate(), negative_ttl=10)
        return [await intro.introspect("junk") for _ in range(5)]

    results = run_with_http(body)
    assert all(r.reason == ident.INACTIVE for r in results)
    assert idp.count("introspect") == 1


# ---------------------------------------------------------------- the refetch slot


def test_a_refetch_that_never_reached_the_endpoint_does_not_spend_the_slot(idp):
    """The IdP is unreachable when a rotated key first shows up; once it is back,
    the next request fetches again instead of waiting out refetch_interval."""
    old = idp.add_key("RSA")
    clock = Clock()

    async def body(http):
        jwks = RemoteJwks(idp.jwks_url, http=http, settings=JwksSettings(refetch_interval=30, timeout=2), clock=clock)
        await jwks.refresh()
        assert jwks.lookup(old, "RS256").kid == old
        new = idp.add_key("RSA")
        idp.down()
        assert jwks.lookup(new, "RS256") is None  # unknown kid: a refetch is due
        await jwks.refresh()  # connection refused: never sent
        assert jwks.lookup(new, "RS256", allow_fetch=False).reason == ident.UNKNOWN_KID
        idp.up()
        clock.advance(2)  # past NOT_SENT_RETRY, far below refetch_interval
        assert jwks.lookup(new, "RS256") is None
        await jwks.refresh()
        return jwks.lookup(new, "RS256", allow_fetch=False), new

    found, new = run_with_http(body)
    assert getattr(found, "kid", found) == new


def test_a_refetch_the_endpoint_answered_badly_still_spends_the_slot(idp):
    idp.add_key("RSA")
    clock = Clock()

    async def body(http):
        jwks = RemoteJwks(idp.jwks_url, http=http, settings=JwksSettings(refetch_interval=30, timeout=2), clock=clock)
        await jwks.refresh()
        new = idp.add_key("RSA")
        idp.fail("jwks", 503)
        assert jwks.lookup(new, "RS256") is None
        await jwks.refresh()
        idp.heal()
        clock.advance(2)
        return jwks.lookup(new, "RS256")

    refused = run_with_http(body)
    assert refused.reason == ident.UNKNOWN_KID  # the endpoint was asked: the rate limit holds
    assert idp.count("jwks") == 2


# ---------------------------------------------------------------- metrics


def test_idp_failures_are_counted_as_backend_errors(idp):
    from rr_addon import metrics
    from rr_addon.identity.service import _count_failure

    def value(operation: str) -> float:
        return metrics.METRICS.registry.get_sample_value("rr_backend_errors_total", {"backend": "idp", "operation": operation}) or 0.0

    before = {op: value(op) for op in ("jwks", "introspection", "token")}
    idp.fail("jwks", 503)
    idp.fail("introspect", 500)
    idp.fail("token", 503)

    async def body(http):
        await RemoteJwks(idp.jwks_url, http=http).refresh()
        await introspector(idp, http).introspect("t")
        with pytest.raises(UpstreamTokenError):
            await ClientCredentialsToken(idp.token_url, "rr", "rr-client-secret", http=http).token()

    async def main():
        http = Http(on_failure=_count_failure)
        try:
            await body(http)
        finally:
            await http.aclose()

    asyncio.run(main())
    assert {op: value(op) - before[op] for op in before} == {"jwks": 1, "introspection": 1, "token": 1}


# ---------------------------------------------------------------- revocation lag


def test_a_revoked_token_is_refused_once_the_default_cache_max_ttl_has_passed(idp):
    """The documented revocation lag: an active answer is reused for at most cache_max_ttl (default 60 s)."""
    from rr_addon.policy.identity_schema import OAuth2Caller

    default = OAuth2Caller.model_validate({"name": "o", "auth": "oauth2", "introspection_url": idp.introspection_url, "client_id": "rr", "client_secret": {"env": "S"}}).cache_max_ttl
    token = idp.opaque(sub="svc", exp=int(time.time()) + 3600)
    mono = Clock()

    async def body(http):
        intro = introspector(idp, http, max_ttl=default, clock=mono)
        first = await intro.introspect(token)
        idp.revoke(token)
        mono.advance(default - 1)
        within = await intro.introspect(token)  # still cached: the lag
        mono.advance(2)
        after = await intro.introspect(token)
        return first, within, after

    first, within, after = run_with_http(body)
    assert first["sub"] == within["sub"] == "svc"
    assert after.reason == ident.INACTIVE
    assert default == 60
