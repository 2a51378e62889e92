"""rr_addon.gate: the request pipeline handed a snapshot directly — no mitmproxy, no CLI."""

from __future__ import annotations

import asyncio
import time

import pytest

from rr_addon.core import decide, reasons
from rr_addon.core.decide import Limits
from rr_addon.core.types import Decision, RequestFacts
from rr_addon.gate import Admitted, Gate, Verdict
from rr_addon.counters.metering import Metering
from rr_addon.counters import open_backend
from rr_addon.store.db import make_engine, migrate
from rr_addon.testing.snapshots import TEST_HMAC_KEY, snapshot_from
from rr_addon.testing.fresh import python_prints
from rr_addon.policy.schema import Config
from rr_addon.core.digests import token_digest
from rr_addon.core.snapshot import compile_snapshot

CONFIG = {
    "targets": [
        {"name": "api", "hosts": ["api.test"], "credentials": [{"name": "live", "kind": "bearer", "secret": "sk_upstream"}]},
    ],
    "proxies": [
        {
            "name": "p",
            "targets": [{"target": "api", "credential": "live"}],
            "rules": [{"name": "cheap", "effect": "deny", "methods": ["POST"], "body": [{"json_path": "$.model", "value": "^big$"}]}],
            "meters": [{"name": "calls", "limits": {"day": 2}, "per": "credential"}],
            "credentials": [{"name": "c", "auth": "api_key", "secret": "caller-key"}],
        }
    ],
}
SNAP = snapshot_from(CONFIG)


def facts(key: str | None = "caller-key", method="GET", body=None) -> RequestFacts:
    headers = (("x-rr-authorization", key),) if key is not None else ()
    if body is not None:
        headers += (("content-type", "application/json"),)
    return RequestFacts(method, "https", "api.test", 443, "/v1/x", headers, (), body)


@pytest.fixture
def gate(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/rr.db")
    migrate(engine)
    metering = Metering(open_backend(redis_url=None, engine=engine))
    yield Gate(metering=metering, limits=Limits())
    asyncio.run(metering.close())
    engine.dispose()


def run(coro):
    return asyncio.run(coro)


def test_an_allowed_request_carries_its_injection_and_its_meters(gate):
    verdict = run(gate.run(SNAP, facts(), time.time()))
    assert verdict.forwards and verdict.outcome.decision.reason == reasons.ALLOWED
    assert verdict.outcome.identity.credential == "c" and verdict.outcome.route.target == "api"
    assert verdict.injection is not None and any(v == "Bearer sk_upstream" for _, v, _ in verdict.injection.headers)
    assert verdict.metered is not None and [m.name for m in verdict.metered.plan.meters] == ["calls"]


def test_the_meter_refuses_once_its_quota_is_used(gate):
    for _ in range(2):
        assert run(gate.run(SNAP, facts(), time.time())).forwards
    refused = run(gate.run(SNAP, facts(), time.time()))
    assert refused.outcome.decision.code == "quota-exceeded" and refused.injection is None
    assert dict(refused.extra_headers)["retry-after"].isdigit()


def test_authentication_says_what_it_found_in_fields_not_in_its_reason(gate):
    missing = run(gate.admit(SNAP, facts(key=None), time.time()))
    assert isinstance(missing, Verdict) and missing.outcome.missing_credential and missing.outcome.unmatched is None
    unknown = run(gate.admit(SNAP, facts(key="not-a-key"), time.time()))
    assert isinstance(unknown, Verdict) and unknown.outcome.decision.reason == reasons.UNKNOWN_CREDENTIAL
    assert unknown.outcome.unmatched is not None and unknown.outcome.unmatched.secret == "not-a-key"
    assert not unknown.outcome.missing_credential and unknown.verification is None  # no verifiers configured
    assert "not-a-key" not in repr(unknown.outcome)  # the presented secret never shows in logs


def test_a_body_rule_waits_for_the_body_and_a_body_that_cannot_be_read_is_refused(gate):
    admitted = run(gate.admit(SNAP, facts(method="POST"), time.time()))
    assert isinstance(admitted, Admitted) and admitted.needs_body
    denied = run(gate.authorize(SNAP, admitted, b'{"model": "big"}'))
    assert denied.outcome.decision.code == "access-denied" and denied.outcome.decision.rule == "cheap" and denied.metered is None
    allowed = run(gate.authorize(SNAP, admitted, b'{"model": "small"}'))
    assert allowed.forwards
    unreadable = run(gate.authorize(SNAP, admitted, Decision.deny("invalid-request", reasons.BODY_ENCODING_INVALID)))
    assert unreadable.outcome.decision.reason == reasons.BODY_ENCODING_INVALID and unreadable.metered is None


def test_the_gate_imports_no_mitmproxy():
    code = "import sys, rr_addon.gate; print(sorted(m for m in sys.modules if m.split('.')[0] in ('mitmproxy', 'typer') or m.startswith('rr_addon.cli') or m.startswith('rr_addon.mitm')))"
    out = python_prints(code)
    assert out == "[]"


class _TokenEndpointDown:
    """The identities service of a data plane whose IdP cannot be reached."""

    async def upstream_injection(self, target: str, credential: str):
        from rr_addon.identity.upstream_token import UpstreamTokenError

        raise UpstreamTokenError("token endpoint unavailable", "connection refused")


OAUTH_CONFIG = {
    "targets": [
        {"name": "api", "hosts": ["api.test"], "credentials": [
            {"name": "oauth", "kind": "oauth2_client_credentials", "token_url": "https://idp.test/token", "client_id": "rr", "client_secret": "s"}]},
    ],
    "proxies": [
        {
            "name": "p",
            "targets": [{"target": "api", "credential": "oauth"}],
            "meters": [{"name": "calls", "limits": {"day": 2}, "per": "credential"}],
            "credentials": [{"name": "c", "auth": "api_key", "secret": "caller-key"}],
        }
    ],
}


def test_a_request_refused_for_want_of_an_upstream_token_does_not_spend_the_quota(tmp_path):
    config = Config.model_validate(OAUTH_CONFIG)
    snap = compile_snapshot(config, version=1, hmac_key=TEST_HMAC_KEY, target_secrets={("api", "oauth"): "s"},
                            caller_digests={("p", "c"): token_digest(TEST_HMAC_KEY, "caller-key")})
    engine = make_engine(f"sqlite:///{tmp_path}/rr.db")
    migrate(engine)
    metering = Metering(open_backend(redis_url=None, engine=engine))
    try:
        down = Gate(identities=_TokenEndpointDown(), metering=metering, limits=Limits())
        for _ in range(3):  # more than the day's quota of 2
            refused = run(down.run(snap, facts(), time.time()))
            assert refused.outcome.decision.code == "upstream-auth-unavailable"
        # the quota is intact: the meter still admits two requests, then refuses
        plain = Gate(metering=metering, limits=Limits())
        checks = [run(plain.admit(snap, facts(), time.time())) for _ in range(3)]
        plans = [snap.proxies["p"].meters.plan("c", decide.authorize(a.admission, a.facts)[1], time.time()) for a in checks]
        admitted = [run(metering.check(plan, "p")).admitted for plan in plans]
        assert admitted == [True, True, False]
    finally:
        asyncio.run(metering.close())
        engine.dispose()
