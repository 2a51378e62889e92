"""Shared pieces of rr_addon.identity: URL policy, token keys, HTTP, single-flight, Shared."""

from __future__ import annotations

import asyncio

import pytest

from rr_addon.identity import FetchError, Http, Refused, Shared, SingleFlight, Verified, check_endpoint_url, token_key
from rr_addon.testing.idp import IdP
from rr_addon.testing.wait import eventually_async


@pytest.mark.parametrize(
    "url",
    [
        "https://idp.example/jwks",
        "https://idp.example:8443/x?y=1",
        "http://127.0.0.1:9/j",
        "http://127.1.2.3/j",
        "http://[::1]/j",
        "http://localhost:80/j",
    ],
)
def test_allowed_endpoint_urls(url):
    assert check_endpoint_url(url) == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://idp.example/jwks", "plain http is only allowed to a loopback address"),
        ("http://10.0.0.1/jwks", "plain http is only allowed to a loopback address"),
        ("http://localhost.evil.example/j", "plain http is only allowed to a loopback address"),
        ("file:///etc/passwd", "must be an https:// URL"),
        ("https:///nohost", "must be an https:// URL"),
        ("https://a:b@idp.example/", "credentials do not belong in the URL"),
        ("https://idp.example/#frag", "a fragment is not allowed"),
        ("https://idp.example:99999/", "is not a valid URL"),
    ],
)
def test_refused_endpoint_urls(url, message):
    with pytest.raises(ValueError, match=message):
        check_endpoint_url(url)


def test_token_keys_are_keyed_digests():
    assert token_key("abc") == token_key("abc") != token_key("abd")
    assert len(token_key("abc")) == 32 and b"abc" not in token_key("abc")


def test_results_summarise_for_the_audit_trail():
    v = Verified({"sub": "a"}, "jwks", "https://idp/", "a", None)
    assert v.audit() == {"subject": "a", "issuer": "https://idp/", "verification": "jwks"}
    r = Refused("token expired", "jwks")
    assert r.audit() == {"verification": "jwks", "reason": "token expired", "detail": None}


def test_http_ignores_proxy_environment(monkeypatch):
    """rr may run with HTTPS_PROXY pointing at itself: identity calls go direct."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    with IdP() as idp:

        async def body():
            http = Http()
            try:
                return await http.json("GET", idp.jwks_url, timeout=2)
            finally:
                await http.aclose()

        response = asyncio.run(body())
    assert response.status == 200 and response.body == {"keys": []}
    assert response.headers["cache-control"] == "max-age=300"


def test_http_does_not_follow_redirects_and_reports_transport_errors():
    with IdP() as idp:
        idp.override("jwks", 302, b"")
        port = idp.port

        async def body():
            http = Http()
            try:
                redirected = await http.json("GET", idp.jwks_url, timeout=2)
                idp.down()
                with pytest.raises(FetchError, match=f"GET http://127.0.0.1:{port}/jwks: ConnectError"):
                    await http.json("GET", idp.jwks_url, timeout=2)
                return redirected
            finally:
                await http.aclose()

        assert asyncio.run(body()).status == 302


def test_single_flight_survives_a_cancelled_waiter():
    calls = []

    async def work():
        calls.append(1)
        await asyncio.sleep(0.05)
        return "done"

    async def main():
        flight: SingleFlight[str, str] = SingleFlight()
        first = asyncio.ensure_future(flight.run("k", work))
        second = asyncio.ensure_future(flight.run("k", work))
        await eventually_async(lambda: calls)  # the first waiter started the work; the second joined it
        assert flight.running("k")
        first.cancel()  # a client that disconnects
        assert await second == "done"
        assert first.cancelled()
        assert not flight.running("k")
        return await flight.run("k", work)  # a new flight once the last one ended

    assert asyncio.run(main()) == "done"
    assert len(calls) == 2


def test_shared_objects_outlive_a_reload_until_swept():
    shared = Shared()
    a = shared.obtain(("jwks", "u1"), object)
    assert shared.obtain(("jwks", "u1"), object) is a
    shared.obtain(("jwks", "u2"), object)
    shared.sweep()
    assert len(shared) == 2
    assert shared.obtain(("jwks", "u1"), object) is a  # the next configuration uses only u1
    shared.sweep()
    assert len(shared) == 1
