import base64
from datetime import datetime, timezone

import pytest

from rr_addon.core import reasons
from rr_addon.core.decide import decide
from rr_addon.core.snapshot import CompileError
from rr_addon.core.types import Decision, Identity, RequestFacts, Route
from rr_addon.testing.snapshots import snapshot_from

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc).timestamp()

CONFIG = {
    "targets": [
        {
            "name": "stripe",
            "hosts": ["api.stripe.com"],
            "credentials": [
                {"name": "live", "kind": "bearer", "secret": "sk_live"},
                {"name": "keyed", "kind": "api_key", "header": "X-API-Key", "secret": "k"},
            ],
        },
        {"name": "wild", "hosts": ["*.example.com"], "caller_headers": ["x-api-key"], "credentials": [{"name": "n", "kind": "none"}]},
        {"name": "plain", "hosts": ["plain.test"], "schemes": ["http"]},
        {"name": "other", "hosts": ["other.test"]},
    ],
    "proxies": [
        {
            "name": "billing",
            "targets": [{"target": "stripe", "credential": "live"}, {"target": "wild"}, {"target": "plain"}],
            "credentials": [
                {"name": "agent-1", "auth": "api_key", "secret": "key-1"},
                {"name": "ci", "auth": "basic", "username": "ci", "secret": "pw"},
                {"name": "jwt-static", "auth": "jwt", "secret": "eyJhbGciOi.static.jwt"},
                {"name": "old", "auth": "api_key", "secret": "key-old", "expires_at": "2026-01-01T00:00:00Z"},
                {"name": "off", "auth": "bearer", "secret": "key-off", "active": False},
                {"name": "alt", "auth": "api_key", "secret": "key-alt", "target_credentials": {"stripe": "keyed"}},
            ],
        },
        {"name": "sleepy", "active": False, "targets": [{"target": "other"}], "credentials": [{"name": "s", "auth": "api_key", "secret": "key-s"}]},
        {"name": "trial", "mode": "report", "targets": [{"target": "other"}], "credentials": [{"name": "t", "auth": "api_key", "secret": "key-t"}]},
    ],
}
SNAP = snapshot_from(CONFIG)


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def facts(host="api.stripe.com", port=443, scheme="https", headers=(), tunnel=()):
    return RequestFacts("GET", scheme, host, port, "/v1/charges", tuple((k.lower(), v) for k, v in headers), tuple(tunnel))


ALL_CALLER_HEADERS = frozenset({"proxy-authorization", "x-rr-authorization", "authorization"})


@pytest.mark.parametrize(
    "f, decision",
    [
        pytest.param(facts(), Decision.deny("unauthenticated", reasons.NO_CREDENTIAL), id="no-credential"),
        pytest.param(facts(tunnel=["Bearer nope"]), Decision.deny("unauthenticated", reasons.UNKNOWN_CREDENTIAL), id="unknown"),
        pytest.param(facts(tunnel=["Basic ###"]), Decision.deny("unauthenticated", reasons.MALFORMED_CREDENTIAL), id="malformed"),
        pytest.param(facts(tunnel=["Bearer a", "Bearer b"]), Decision.deny("unauthenticated", reasons.AMBIGUOUS_CREDENTIAL), id="ambiguous"),
        pytest.param(facts(tunnel=["Bearer key-old"]), Decision.deny("unauthenticated", reasons.EXPIRED_CREDENTIAL), id="expired"),
        pytest.param(facts(tunnel=["Bearer key-off"]), Decision.deny("unauthenticated", reasons.INACTIVE_CREDENTIAL), id="inactive-credential"),
        pytest.param(facts(host="other.test", tunnel=["Bearer key-s"]), Decision.deny("unauthenticated", reasons.INACTIVE_PROXY), id="inactive-proxy"),
        pytest.param(facts(tunnel=[f"Basic {b64('ci:wrong')}"]), Decision.deny("unauthenticated", reasons.UNKNOWN_CREDENTIAL), id="basic-wrong-secret"),
        pytest.param(facts(tunnel=[f"Basic {b64('other:pw')}"]), Decision.deny("unauthenticated", reasons.UNKNOWN_CREDENTIAL), id="basic-wrong-user"),
        pytest.param(
            facts(host="evil.test", tunnel=["Bearer key-1"]),
            Decision.deny("unknown-target", reasons.UNKNOWN_TARGET, scope="proxy", detail="evil.test:443; check the URL, or add the host to a target of proxy billing"),
            id="unknown-target",
        ),
        pytest.param(
            facts(host="other.test", tunnel=["Bearer key-1"]),
            Decision.deny("unknown-target", reasons.UNKNOWN_TARGET, scope="proxy", detail="other.test:443; check the URL, or add the host to a target of proxy billing"),
            id="target-of-another-proxy",
        ),
        pytest.param(
            facts(port=8443, tunnel=["Bearer key-1"]),
            Decision.deny("unknown-target", reasons.UNKNOWN_TARGET, scope="proxy", detail="api.stripe.com:8443; check the URL, or add the host to a target of proxy billing"),
            id="wrong-port",
        ),
        pytest.param(
            facts(scheme="http", port=80, tunnel=["Bearer key-1"]),
            Decision.deny(
                "unknown-target", reasons.SCHEME_NOT_ALLOWED, scope="target", detail="http://api.stripe.com:80; use https://api.stripe.com (target stripe accepts https only)"
            ),
            id="http-to-https-only-target",
        ),
        pytest.param(
            facts(scheme="https", port=443, host="plain.test", tunnel=["Bearer key-1"]),
            Decision.deny("unknown-target", reasons.SCHEME_NOT_ALLOWED, scope="target", detail="https://plain.test:443; use http (target plain accepts http only)"),
            id="https-to-http-only-target",
        ),
        pytest.param(facts(tunnel=["Bearer key-1"]), Decision.allow(reasons.ALLOWED), id="allowed"),
    ],
)
def test_decisions(f, decision):
    assert decide(SNAP, f, NOW).decision == decision


@pytest.mark.parametrize(
    "f, identity, route",
    [
        pytest.param(facts(tunnel=[f"Basic {b64('anything:key-1')}"]), Identity("billing", "agent-1", "api_key", "connect"), Route("stripe", "live"), id="key-as-basic-password"),
        pytest.param(facts(tunnel=[f"Basic {b64('ci:pw')}"]), Identity("billing", "ci", "basic", "connect"), Route("stripe", "live"), id="basic-credential"),
        pytest.param(facts(tunnel=["Bearer eyJhbGciOi.static.jwt"]), Identity("billing", "jwt-static", "jwt", "connect"), Route("stripe", "live"), id="static-jwt"),
        pytest.param(facts(headers=[("X-RR-Authorization", "key-1")]), Identity("billing", "agent-1", "api_key", "x-rr-authorization"), Route("stripe", "live"), id="rr-header"),
        pytest.param(facts(headers=[("Authorization", "Bearer key-1")]), Identity("billing", "agent-1", "api_key", "authorization"), Route("stripe", "live"), id="authorization"),
        pytest.param(facts(tunnel=["Bearer key-alt"]), Identity("billing", "alt", "api_key", "connect"), Route("stripe", "keyed"), id="credential-override"),
        pytest.param(
            facts(host="a.b.example.com", headers=[("x-api-key", "key-1")]), Identity("billing", "agent-1", "api_key", "x-api-key"), Route("wild", "n"), id="caller-header-only-target"
        ),
        pytest.param(facts(host="plain.test", scheme="http", port=80, tunnel=["Bearer key-1"]), Identity("billing", "agent-1", "api_key", "connect"), Route("plain", None), id="no-credentials"),
    ],
)
def test_identity_and_route(f, identity, route):
    out = decide(SNAP, f, NOW)
    assert out.decision.allowed
    assert (out.identity, out.route) == (identity, route)


def test_caller_header_only_for_its_targets():
    # x-api-key is a caller header of *.example.com only; on api.stripe.com it is just a header.
    out = decide(SNAP, facts(headers=[("x-api-key", "key-1")]), NOW)
    assert out.decision == Decision.deny("unauthenticated", reasons.NO_CREDENTIAL)


@pytest.mark.parametrize(
    "f, strip",
    [
        pytest.param(facts(tunnel=["Bearer key-1"], headers=[("Authorization", "Bearer mine")]), {"proxy-authorization", "x-rr-authorization"}, id="authorization-not-consumed"),
        pytest.param(facts(headers=[("Authorization", "Bearer key-1")]), {"proxy-authorization", "x-rr-authorization", "authorization"}, id="authorization-consumed"),
        pytest.param(facts(headers=[("Authorization", "Bearer wrong")]), ALL_CALLER_HEADERS, id="401-strips-every-candidate"),
        pytest.param(facts(host="x.example.com", headers=[("x-api-key", "wrong")]), ALL_CALLER_HEADERS | {"x-api-key"}, id="401-strips-caller-headers"),
    ],
)
def test_strip_headers(f, strip):
    assert decide(SNAP, f, NOW).strip_headers == strip


def test_report_mode_never_waives_target_mapping():
    out = decide(SNAP, facts(host="api.stripe.com", tunnel=["Bearer key-t"]), NOW)
    assert out.decision.code == "unknown-target" and not out.report_only


def test_same_secret_twice_does_not_compile():
    data = {"proxies": [{"name": "a", "credentials": [{"name": "x", "auth": "api_key", "secret": "same"}]}, {"name": "b", "credentials": [{"name": "y", "auth": "bearer", "secret": "same"}]}]}
    with pytest.raises(CompileError, match=r"proxies\[b\].credentials\[y\]: same secret as proxies\[a\].credentials\[x\]"):
        snapshot_from(data)


def test_lookup_cost_does_not_depend_on_size():
    """Not a timing test: the lookups are dict gets; prove that the index holds everything."""
    big = {
        "targets": [{"name": f"t{i}", "hosts": [f"h{i}.test"]} for i in range(1000)],
        "proxies": [
            {"name": "p", "targets": [{"target": f"t{i}"} for i in range(1000)], "credentials": [{"name": f"c{i}", "auth": "api_key", "secret": f"s{i}"} for i in range(2000)]}
        ],
    }
    snap = snapshot_from(big)
    assert len(snap.by_token) == 2000 and len(snap.proxies["p"].routes) == 1000
    out = decide(snap, facts(host="h999.test", tunnel=["Bearer s1999"]), NOW)
    assert out.route == Route("t999", None) and out.identity.credential == "c1999"


def test_plain_http_to_a_host_listed_with_port_443_says_use_https():
    snap = snapshot_from(
        {
            "targets": [{"name": "pinned", "hosts": ["api.pinned.test:443"]}],
            "proxies": [{"name": "p", "targets": [{"target": "pinned"}], "credentials": [{"name": "c", "auth": "api_key", "secret": "key-p"}]}],
        }
    )
    d = decide(snap, facts(host="api.pinned.test", port=80, scheme="http", tunnel=["Bearer key-p"]), NOW).decision
    assert d == Decision.deny(
        "unknown-target",
        reasons.UNKNOWN_TARGET,
        scope="proxy",
        detail="http://api.pinned.test:80; use https://api.pinned.test (target pinned accepts https only)",
    )
