"""Access rules in the four scopes through decide(): exact decisions and reasons."""

import json

import pytest

from rr_addon.core import reasons
from rr_addon.core.decide import Limits, admit, decide, explain
from rr_addon.core.types import Decision, RequestFacts
from rr_addon.testing.snapshots import snapshot_from

CONFIG = {
    "targets": [
        {
            "name": "stripe",
            "hosts": ["api.stripe.com"],
            "rules": [{"name": "no-admin", "effect": "deny", "path": "^/admin"}],
            "credentials": [
                {"name": "live", "kind": "bearer", "secret": "s", "rules": [{"name": "no-refunds", "effect": "deny", "path": "^/v1/refunds"}]},
                {"name": "ro", "kind": "bearer", "secret": "s2", "default_effect": "deny", "rules": [{"name": "reads", "effect": "allow", "methods": ["GET"]}]},
            ],
        },
        {"name": "openai", "hosts": ["api.openai.com"], "default_effect": "deny", "rules": [{"name": "chat", "effect": "allow", "methods": ["POST"], "path": "^/v1/chat/completions$"}]},
    ],
    "proxies": [
        {
            "name": "billing",
            "rules": [
                {"name": "no-deletes", "effect": "deny", "priority": 900, "methods": ["DELETE"], "path": "^/v1/customers/"},
                {"name": "no-debug", "effect": "deny", "headers": [{"name": "(?i)^x-debug$"}]},
                {"name": "small-pages", "effect": "deny", "query": [{"name": "^limit$", "value": "^[0-9]{4,}$"}]},
                {"name": "cheap-model", "effect": "deny", "methods": ["POST"], "path": "^/v1/chat/", "body": [{"json_path": "$.model", "value": "^gpt-4o-mini$", "presence": "absent"}]},
            ],
            "targets": [{"target": "stripe", "credential": "live"}, {"target": "openai"}],
            "credentials": [
                {"name": "agent", "auth": "api_key", "secret": "k1"},
                {"name": "reader", "auth": "api_key", "secret": "k2", "target_credentials": {"stripe": "ro"}},
                {"name": "no-charges", "auth": "api_key", "secret": "k3", "rules": [{"name": "charges", "effect": "deny", "path": "(?i)^/v1/charges"}]},
                {"name": "claims", "auth": "api_key", "secret": "k4", "rules": [{"name": "needs-claim", "effect": "deny", "claims": [{"claim": "scope", "value": "x"}]}]},
            ],
        },
        {
            "name": "trial",
            "mode": "report",
            "rules": [{"name": "no-posts", "effect": "deny", "methods": ["POST"]}],
            "targets": [{"target": "stripe", "credential": "live"}],
            "credentials": [{"name": "t", "auth": "api_key", "secret": "k5"}],
        },
    ],
}
SNAP = snapshot_from(CONFIG)


def facts(method="GET", path="/v1/charges", key="k1", host="api.stripe.com", headers=(), body=None):
    hs = [("x-rr-authorization", key), *[(k.lower(), v) for k, v in headers]]
    if body is not None and not any(k == "content-type" for k, _ in hs):
        hs.append(("content-type", "application/json"))
    raw = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    return RequestFacts(method, "https", host, 443, path, tuple(hs), (), raw)


def denied(scope, rule, reason=reasons.DENIED_BY_RULE):
    return Decision.deny("access-denied", reason, scope=scope, rule=rule)


ALLOWED = Decision.allow(reasons.ALLOWED)


@pytest.mark.parametrize(
    "f, decision",
    [
        pytest.param(facts(), ALLOWED, id="plain-get"),
        pytest.param(facts("DELETE", "/v1/customers/cus_1"), denied("proxy", "no-deletes"), id="proxy-method-path"),
        pytest.param(facts("GET", "/v1/customers/cus_1"), ALLOWED, id="proxy-rule-needs-both-fields"),
        pytest.param(facts(headers=[("X-Debug", "1")]), denied("proxy", "no-debug"), id="proxy-header-presence"),
        pytest.param(facts(path="/v1/charges?limit=10"), ALLOWED, id="query-small"),
        pytest.param(facts(path="/v1/charges?limit=10000"), denied("proxy", "small-pages"), id="query-value"),
        pytest.param(facts(path="/admin/users"), denied("target", "no-admin"), id="target-scope"),
        pytest.param(facts(path="/v1/../admin/users"), denied("target", "no-admin"), id="dot-segments-resolved-before-rules"),
        pytest.param(facts(path="/v1/%2e%2e/admin"), Decision.deny("invalid-request", "percent-encoded dot segment in path"), id="encoded-dot-segment-refused"),
        pytest.param(facts(path="/v1%2Fadmin"), Decision.deny("invalid-request", "encoded '/' or '\\' in path", detail=reasons.ENCODED_SLASH_HINT), id="encoded-slash-refused"),
        pytest.param(facts(path="//admin"), denied("target", "no-admin"), id="double-slash-collapsed"),
        pytest.param(facts(path="/%61dmin"), denied("target", "no-admin"), id="unreserved-escape-decoded"),
        pytest.param(facts(key="k3", path="/V1/CHARGES"), denied("proxy-credential", "charges"), id="proxy-credential-scope-case-insensitive"),
        pytest.param(facts(path="/v1/refunds"), denied("target-credential", "no-refunds"), id="target-credential-scope"),
        pytest.param(facts(key="k2", method="GET"), ALLOWED, id="target-credential-default-deny-allow-rule"),
        pytest.param(facts(key="k2", method="POST"), denied("target-credential", None, reasons.DEFAULT_DENIES), id="target-credential-default-deny"),
        pytest.param(facts(key="k4"), ALLOWED, id="claims-rule-never-matches-unverified"),
        pytest.param(facts("POST", "/v1/chat/completions", host="api.openai.com", body={"model": "gpt-4o-mini"}), ALLOWED, id="body-allowed-model"),
        pytest.param(facts("POST", "/v1/chat/completions", host="api.openai.com", body={"model": "gpt-4o"}), denied("proxy", "cheap-model"), id="body-other-model"),
        pytest.param(facts("POST", "/v1/chat/completions", host="api.openai.com", body={"messages": []}), denied("proxy", "cheap-model"), id="body-field-absent"),
        pytest.param(facts("POST", "/v1/chat/completions", host="api.openai.com", body=b"{not json"), Decision.deny("invalid-request", reasons.BODY_NOT_JSON), id="body-not-json"),
        pytest.param(
            facts("POST", "/v1/chat/completions", host="api.openai.com", body=b"[" * 100_000 + b"]" * 100_000), Decision.deny("invalid-request", reasons.BODY_NOT_JSON), id="body-too-deep"
        ),
        pytest.param(
            facts("POST", "/v1/chat/completions", host="api.openai.com", headers=[("content-type", "application/x-www-form-urlencoded")], body=b"model=gpt-4o-mini"),
            ALLOWED,
            id="form-body",
        ),
        pytest.param(facts("GET", "/v1/models", host="api.openai.com"), denied("target", None, reasons.DEFAULT_DENIES), id="target-default-deny"),
        pytest.param(facts("POST", "/v1/chat/completions", host="api.openai.com", body={"model": "gpt-4o-mini"}, key="k2"), ALLOWED, id="scopes-of-other-target-unaffected"),
    ],
)
def test_rule_decisions(f, decision):
    assert decide(SNAP, f, 0).decision == decision


def test_denies_report_the_first_scope_in_order():
    # both the proxy (no-debug) and the target (no-admin) deny: the proxy scope is reported
    assert decide(SNAP, facts(path="/admin", headers=[("x-debug", "1")]), 0).decision == denied("proxy", "no-debug")


def test_report_mode_records_would_deny():
    out = decide(SNAP, facts("POST", key="k5"), 0)
    assert out.decision == denied("proxy", "no-posts") and out.report_only
    out = decide(SNAP, facts("GET", path="/admin", key="k5"), 0)
    assert out.decision == denied("target", "no-admin") and out.report_only
    out = decide(SNAP, facts("GET", path="/v1/%2e%2e/x", key="k5"), 0)
    assert out.decision.code == "invalid-request" and not out.report_only  # refusals are not trialled


def test_body_over_the_inspection_limit():
    f = facts("POST", "/v1/chat/completions", host="api.openai.com", body={"model": "gpt-4o-mini", "pad": "x" * 2000})
    out = decide(SNAP, f, 0, Limits(inspect_bytes=1000))
    assert out.decision.code == "payload-too-large" and out.decision.reason == reasons.BODY_OVER_INSPECTION_LIMIT
    # no body rules on this request's scopes: no limit applies
    admitted = admit(snapshot_from({**CONFIG, "proxies": [{**CONFIG["proxies"][0], "rules": []}]}), f, 0)
    assert not admitted.needs_body


def test_needs_body_only_when_a_scope_reads_it():
    assert admit(SNAP, facts(), 0).needs_body  # the billing proxy has a body rule
    trial = admit(SNAP, facts(key="k5"), 0)
    assert not trial.needs_body


def test_canonical_path_is_what_gets_forwarded():
    admitted = admit(SNAP, facts(path="/v1/./charges//x?b=2&a=%41"), 0)
    assert admitted.path.target == "/v1/charges/x?b=2&a=%41"


def test_explain_traces_every_scope():
    caller = SNAP.proxies["billing"].callers["agent"]
    ex = explain(SNAP, caller, facts("DELETE", "/v1/customers/cus_1"))
    assert ex.outcome.decision == denied("proxy", "no-deletes")
    assert [t.scope for t in ex.scopes] == ["proxy", "target", "proxy-credential", "target-credential"]
    proxy_trace = ex.scopes[0]
    assert [(r.rule, r.matched, r.failed) for r in proxy_trace.rules] == [
        ("no-deletes", True, None),
        ("no-debug", False, "headers[0]"),
        ("small-pages", False, "query[0]"),
        ("cheap-model", False, "methods"),
    ]
    assert dict(ex.steps)["target"] == "stripe via live"
    assert ex.scopes[1].result.reason == "no rule matched; scope default allows"
    assert reasons.ALLOWED_BY_RULE == "allowed by rule"
