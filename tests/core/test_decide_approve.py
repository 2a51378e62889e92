"""The approve effect through decide(): combination across scopes, report mode, explain."""

import json

import pytest

from rr_addon.core import reasons
from rr_addon.core.decide import decide, explain
from rr_addon.core.reasons import DEFAULT_DENIES, DENIED_BY_RULE, HELD_FOR_APPROVAL as HELD_BY_RULE
from rr_addon.core.types import Decision, Hold, RequestFacts
from rr_addon.testing.snapshots import snapshot_from

HOOK = "https://hooks.example.com/rr"
CONFIG = {
    "targets": [
        {
            "name": "stripe",
            "hosts": ["api.stripe.com"],
            "rules": [
                {"name": "refunds-need-a-human", "effect": "approve", "methods": ["POST"], "path": "^/v1/refunds",
                 "approval": {"timeout": 300, "notify": {"url": HOOK}}},
                {"name": "no-admin", "effect": "deny", "path": "^/admin"},
                {"name": "big-charges", "effect": "approve", "priority": 100, "path": "^/v1/charges",
                 "query": [{"name": "^amount$", "value": "^[0-9]{5,}$"}]},
            ],
            "credentials": [{"name": "live", "kind": "bearer", "secret": "s", "rules": [
                {"name": "no-refund-of-disputes", "effect": "deny", "path": "^/v1/refunds/disputed"},
                {"name": "refunds-quickly", "effect": "approve", "path": "^/v1/refunds", "approval": {"timeout": 60}},
            ]}],
        },
    ],
    "proxies": [
        {
            "name": "billing",
            "rules": [{"name": "refund-allowed", "effect": "allow", "path": "^/v1/refunds"}],
            "targets": [{"target": "stripe", "credential": "live"}],
            "credentials": [
                {"name": "agent", "auth": "api_key", "secret": "k1"},
                {"name": "strict", "auth": "api_key", "secret": "k2", "default_effect": "deny", "rules": [
                    {"name": "reads", "effect": "allow", "methods": ["GET"]},
                    {"name": "big-ones", "effect": "approve", "methods": ["POST"], "path": "^/v1/charges"}]},
            ],
        },
        {
            "name": "trial",
            "mode": "report",
            "targets": [{"target": "stripe", "credential": "live"}],
            "credentials": [{"name": "t", "auth": "api_key", "secret": "k5"}],
        },
    ],
}
SNAP = snapshot_from(CONFIG)


def facts(method="GET", path="/v1/charges", key="k1", body=None):
    hs = [("x-rr-authorization", key)]
    if body is not None:
        hs.append(("content-type", "application/json"))
    return RequestFacts(method, "https", "api.stripe.com", 443, path, tuple(hs), (), json.dumps(body).encode() if body is not None else None)


def held(scope, rule, timeout=300, notify=()):
    return Decision.approve(reasons.HELD_FOR_APPROVAL, Hold(timeout, notify), scope=scope, rule=rule)


@pytest.mark.parametrize(
    "f, decision",
    [
        # target and target-credential approve rules match: the first scope is named, the shortest timeout holds
        pytest.param(facts("POST", "/v1/refunds"), held("target", "refunds-need-a-human", 60, (HOOK,)), id="held-across-scopes"),
        # an approve rule outranks an allow rule of the same request in another scope
        pytest.param(facts("GET", "/v1/refunds"), held("target-credential", "refunds-quickly", 60), id="approve-beats-allow"),
        # a deny in a later scope wins over an earlier scope's hold
        pytest.param(facts("POST", "/v1/refunds/disputed"), Decision.deny("access-denied", DENIED_BY_RULE, scope="target-credential", rule="no-refund-of-disputes"), id="deny-beats-approve"),
        # any reading of a repeated parameter matching an approve rule holds (read like a deny rule)
        pytest.param(facts("GET", "/v1/charges?amount=5&amount=100000"), held("target", "big-charges"), id="repeated-parameter-holds"),
        pytest.param(facts("GET", "/v1/charges?amount=5"), Decision.allow(reasons.ALLOWED), id="not-matching-allows"),
        # a scope whose default denies allows nothing: a hold there still needs every other scope
        pytest.param(facts("POST", "/v1/charges", key="k2"), held("proxy-credential", "big-ones"), id="approve-in-default-deny-scope"),
        pytest.param(facts("DELETE", "/v1/charges", key="k2"), Decision.deny("access-denied", DEFAULT_DENIES, scope="proxy-credential"), id="default-deny-still-denies"),
        pytest.param(facts("POST", "/admin/x", key="k2"), Decision.deny("access-denied", DENIED_BY_RULE, scope="target", rule="no-admin"), id="deny-rule-with-hold-elsewhere"),
    ],
)
def test_approve_decisions(f, decision):
    assert decide(SNAP, f, 0).decision == decision


def test_held_decision_answered_by_mistake_refuses():
    d = decide(SNAP, facts("POST", "/v1/refunds"), 0).decision
    assert d.held and not d.allowed and d.status == 403


def test_report_mode_flags_without_holding():
    out = decide(SNAP, facts("POST", "/v1/refunds", key="k5"), 0)
    assert out.decision.held and out.report_only


def test_explain_shows_the_approve_rule():
    caller = SNAP.proxies["billing"].callers["agent"]
    ex = explain(SNAP, caller, facts("POST", "/v1/refunds"))
    assert ex.outcome.decision.held
    target = next(s for s in ex.scopes if s.scope == "target")
    assert target.result.effect == "approve" and target.result.reason == HELD_BY_RULE and target.result.rule == "refunds-need-a-human"
    assert any(r.rule == "refunds-need-a-human" and r.effect == "approve" and r.matched for r in target.rules)


def test_an_approval_does_not_outlive_a_change_that_refuses_the_request():
    from rr_addon.core.decide import admit, still_allowed

    f = facts("POST", "/v1/refunds")
    admitted = admit(SNAP, f, 0)
    assert still_allowed(SNAP, admitted, f, 0) is None  # unchanged: the approval stands
    revoked = json.loads(json.dumps(CONFIG))
    revoked["proxies"][0]["credentials"][0]["active"] = False
    assert still_allowed(snapshot_from(revoked), admitted, f, 0) == Decision.deny("unauthenticated", reasons.INACTIVE_CREDENTIAL)
    gone = json.loads(json.dumps(CONFIG))
    del gone["proxies"][0]["credentials"][0]
    assert still_allowed(snapshot_from(gone), admitted, f, 0) == Decision.deny("unauthenticated", reasons.UNKNOWN_CREDENTIAL)
    denying = json.loads(json.dumps(CONFIG))
    denying["proxies"][0]["rules"].append({"name": "refunds-frozen", "effect": "deny", "path": "^/v1/refunds"})
    assert still_allowed(snapshot_from(denying), admitted, f, 0) == Decision.deny("access-denied", DENIED_BY_RULE, scope="proxy", rule="refunds-frozen")
