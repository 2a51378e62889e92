import base64

import pytest

from rr_addon.core import reasons
from rr_addon.core.callers import Presented, Problem, candidate_headers, find_presented
from rr_addon.core.types import RequestFacts


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def facts(headers=(), tunnel=()):
    return RequestFacts("GET", "https", "api.test", 443, "/", tuple((k.lower(), v) for k, v in headers), tuple(tunnel))


@pytest.mark.parametrize(
    "headers, tunnel, extra, expected",
    [
        pytest.param([], [], (), None, id="nothing"),
        pytest.param([], [f"Basic {b64('any:key1')}"], (), Presented("connect", "", "key1", "any"), id="connect-basic"),
        pytest.param([], ["Bearer tok"], (), Presented("connect", "", "tok"), id="connect-bearer"),
        pytest.param([], ["bearer tok"], (), Presented("connect", "", "tok"), id="scheme-case-insensitive"),
        pytest.param(
            [("Proxy-Authorization", "Bearer inner"), ("X-RR-Authorization", "Bearer rr")],
            ["Bearer tunnel"],
            (),
            Presented("connect", "", "tunnel"),
            id="connect-wins",
        ),
        pytest.param(
            [("Proxy-Authorization", f"Basic {b64('u:p')}")], [], (), Presented("proxy-authorization", "proxy-authorization", "p", "u"), id="plain-http-proxy-auth"
        ),
        pytest.param(
            [("X-RR-Authorization", "Bearer rr"), ("Authorization", "Bearer up")],
            [],
            (),
            Presented("x-rr-authorization", "x-rr-authorization", "rr"),
            id="rr-header-before-authorization",
        ),
        pytest.param([("X-RR-Authorization", "rawsecret")], [], (), Presented("x-rr-authorization", "x-rr-authorization", "rawsecret"), id="rr-raw"),
        pytest.param([("Authorization", "Bearer sdk")], [], (), Presented("authorization", "authorization", "sdk"), id="authorization"),
        pytest.param([("Authorization", "sk-raw")], [], (), Presented("authorization", "authorization", "sk-raw"), id="authorization-raw"),
        pytest.param([("x-api-key", "k")], [], ("x-api-key",), Presented("x-api-key", "x-api-key", "k"), id="caller-header"),
        pytest.param([("x-api-key", "k")], [], (), None, id="caller-header-not-declared"),
        pytest.param([("Authorization", "Bearer a"), ("x-api-key", "k")], [], ("x-api-key",), Presented("authorization", "authorization", "a"), id="authorization-before-caller-header"),
    ],
)
def test_channels(headers, tunnel, extra, expected):
    assert find_presented(facts(headers, tunnel), extra) == expected


@pytest.mark.parametrize(
    "value, reason",
    [
        pytest.param("Basic !!!notbase64", reasons.MALFORMED_CREDENTIAL, id="bad-base64"),
        pytest.param(f"Basic {b64('nocolon')}", reasons.MALFORMED_CREDENTIAL, id="no-colon"),
        pytest.param("Basic " + base64.b64encode(b"u:\xff\xfe").decode(), reasons.MALFORMED_CREDENTIAL, id="non-utf8"),
        pytest.param(f"Basic {b64('user:')}", reasons.MALFORMED_CREDENTIAL, id="empty-secret"),
        pytest.param("Digest abc", reasons.MALFORMED_CREDENTIAL, id="unknown-scheme"),
        pytest.param("Bearer a b", reasons.MALFORMED_CREDENTIAL, id="space-in-token"),
        pytest.param("Bearer " + "a" * 70000, reasons.MALFORMED_CREDENTIAL, id="64kb"),
        pytest.param("", reasons.MALFORMED_CREDENTIAL, id="empty"),
    ],
)
def test_malformed_proxy_authorization(value, reason):
    assert find_presented(facts(tunnel=[value])) == Problem(reason, "connect")


def test_differing_copies_are_ambiguous():
    assert find_presented(facts(tunnel=["Bearer a", "Bearer b"])) == Problem(reasons.AMBIGUOUS_CREDENTIAL, "connect")
    got = find_presented(facts([("X-RR-Authorization", "a"), ("X-RR-Authorization", "b")]))
    assert got == Problem(reasons.AMBIGUOUS_CREDENTIAL, "x-rr-authorization")


def test_identical_copies_are_one_credential():
    assert find_presented(facts(tunnel=["Bearer a", "Bearer a"])) == Presented("connect", "", "a")


def test_candidate_headers_cover_every_channel():
    assert candidate_headers(("x-api-key",)) == {"proxy-authorization", "x-rr-authorization", "authorization", "x-api-key"}
