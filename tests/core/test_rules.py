import re2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rr_addon.policy.rules_schema import Match, Rule
from rr_addon.core import rules as rules_module
from rr_addon.core.rules import PatternSet, RuleRequest, RuleTrace, ScopeResult, ScopeRules, compile_when
from rr_addon.core import reasons

DEFAULT_ALLOW = ScopeResult("allow", None, reasons.DEFAULT_ALLOWS)
DEFAULT_DENY = ScopeResult("deny", None, reasons.DEFAULT_DENIES)


def denied(rule: str) -> ScopeResult:
    return ScopeResult("deny", rule, reasons.DENIED_BY_RULE)


def allowed(rule: str) -> ScopeResult:
    return ScopeResult("allow", rule, reasons.ALLOWED_BY_RULE)


HIT = denied("r")  # the single deny rule "r" matched
MISS = DEFAULT_ALLOW


def compile_scope(rules: list[dict], default: str = "allow") -> ScopeRules:
    return ScopeRules.compile("proxy", [Rule.model_validate(r) for r in rules], default)


def request(method="GET", path="/", headers=None, query=(), **body) -> RuleRequest:
    return RuleRequest(method, path, headers or {}, tuple(query), **body)


def check(scope: ScopeRules, req: RuleRequest, expected: ScopeResult) -> None:
    assert scope.evaluate(req) == expected
    assert scope.explain(req).result == expected  # explain reports what evaluate decides


# --------------------------------------------------------------------------
# One deny rule "r" with the given fields; the request either hits it or the
# scope default (allow) decides.

FIELDS = [
    # methods
    ("methods-match", {"methods": ["DELETE"]}, request("DELETE"), HIT),
    ("methods-lower-case-request", {"methods": ["DELETE"]}, request("delete"), HIT),
    ("methods-other", {"methods": ["DELETE"]}, request("GET"), MISS),
    ("methods-several", {"methods": ["PUT", "patch"]}, request("PATCH"), HIT),
    ("no-fields-matches-everything", {}, request("OPTIONS", "/anything"), HIT),
    # path: RE2 search semantics on the canonical path
    ("path-search", {"path": "customers"}, request(path="/v1/customers/1"), HIT),
    ("path-anchored-start", {"path": "^/customers"}, request(path="/v1/customers"), MISS),
    ("path-anchored-end", {"path": "/admin$"}, request(path="/v1/admin/"), MISS),
    ("path-anchored-both", {"path": "^/admin$"}, request(path="/admin"), HIT),
    ("path-case-sensitive", {"path": "^/v1/admin"}, request(path="/V1/admin"), MISS),
    ("path-ignore-case", {"path": "^/v1/admin", "ignore_case": True}, request(path="/V1/ADMIN"), HIT),
    ("path-inline-i", {"path": "(?i)^/v1/admin"}, request(path="/V1/Admin"), HIT),
    ("path-absent-elsewhere", {"path": {"pattern": "^/v1/public/", "presence": "absent"}}, request(path="/v1/admin"), HIT),
    ("path-absent-there", {"path": {"pattern": "^/v1/public/", "presence": "absent"}}, request(path="/v1/public/x"), MISS),
    (
        "path-absent-ignore-case",
        {"path": {"pattern": "^/v1/public/", "presence": "absent"}, "ignore_case": True},
        request(path="/V1/PUBLIC/x"),
        MISS,
    ),
    ("path-encoded-unicode", {"path": "^/caf%C3%A9$"}, request(path="/caf%C3%A9"), HIT),
    ("path-and-method", {"methods": ["DELETE"], "path": "^/v1/"}, request("GET", "/v1/x"), MISS),
    # headers: names case-insensitive; some header with a matching name has a matching value
    ("header-present", {"headers": [{"name": "^x-debug$"}]}, request(headers={"x-debug": ("1",)}), HIT),
    ("header-missing", {"headers": [{"name": "^x-debug$"}]}, request(headers={"x-other": ("1",)}), MISS),
    ("header-empty-value-is-present", {"headers": [{"name": "^x-debug$"}]}, request(headers={"x-debug": ("",)}), HIT),
    ("header-name-case-insensitive", {"headers": [{"name": "^X-Debug$"}]}, request(headers={"x-debug": ("1",)}), HIT),
    ("header-name-regex", {"headers": [{"name": "^x-debug-"}]}, request(headers={"x-debug-level": ("1",)}), HIT),
    ("header-name-regex-miss", {"headers": [{"name": "^x-debug-"}]}, request(headers={"x-debugger": ("1",)}), MISS),
    ("header-name-regex-upper", {"headers": [{"name": "^X-DEBUG-"}]}, request(headers={"x-debug-level": ("1",)}), HIT),
    ("header-value", {"headers": [{"name": "^x-env$", "value": "^prod$"}]}, request(headers={"x-env": ("prod",)}), HIT),
    ("header-value-mismatch", {"headers": [{"name": "^x-env$", "value": "^prod$"}]}, request(headers={"x-env": ("production",)}), MISS),
    ("header-value-search", {"headers": [{"name": "^x-env$", "value": "prod"}]}, request(headers={"x-env": ("production",)}), HIT),
    ("header-value-any-of-several", {"headers": [{"name": "^x-env$", "value": "^prod$"}]}, request(headers={"x-env": ("dev", "prod")}), HIT),
    ("header-value-case-sensitive", {"headers": [{"name": "^x-env$", "value": "^prod$"}]}, request(headers={"x-env": ("PROD",)}), MISS),
    (
        "header-value-ignore-case",
        {"headers": [{"name": "^x-env$", "value": "^prod$"}], "ignore_case": True},
        request(headers={"x-env": ("PROD",)}),
        HIT,
    ),
    (
        "header-value-of-another-header",
        {"headers": [{"name": "^x-a$", "value": "^1$"}]},
        request(headers={"x-a": ("2",), "x-b": ("1",)}),
        MISS,
    ),
    (
        "header-regex-name-value-same-header",
        {"headers": [{"name": "^x-", "value": "^1$"}]},
        request(headers={"x-a": ("2",), "x-b": ("1",)}),
        HIT,
    ),
    ("header-absent-missing", {"headers": [{"name": "^x-debug$", "presence": "absent"}]}, request(), HIT),
    ("header-absent-there", {"headers": [{"name": "^x-debug$", "presence": "absent"}]}, request(headers={"x-debug": ("",)}), MISS),
    (
        "header-absent-value-other",
        {"headers": [{"name": "^x-env$", "value": "^prod$", "presence": "absent"}]},
        request(headers={"x-env": ("dev",)}),
        HIT,
    ),
    (
        "header-absent-value-there",
        {"headers": [{"name": "^x-env$", "value": "^prod$", "presence": "absent"}]},
        request(headers={"x-env": ("prod",)}),
        MISS,
    ),
    (
        # a deny rule reads repeated headers every way: "dev" may be the one the upstream reads
        "header-absent-value-not-every-occurrence",
        {"headers": [{"name": "^x-env$", "value": "^prod$", "presence": "absent"}]},
        request(headers={"x-env": ("dev", "prod")}),
        HIT,
    ),
    (
        "header-every-matcher-must-match",
        {"headers": [{"name": "^x-a$"}, {"name": "^x-b$"}]},
        request(headers={"x-a": ("1",)}),
        MISS,
    ),
    (
        "header-undecodable-bytes",
        {"headers": [{"name": "^x-a$", "value": "^ab"}]},
        request(headers={"x-a": ("ab\udcff",)}),
        HIT,
    ),
    # query: decoded pairs; names case-sensitive unless ignore_case
    ("query-present", {"query": [{"name": "^debug$"}]}, request(query=[("debug", "1")]), HIT),
    ("query-missing", {"query": [{"name": "^debug$"}]}, request(query=[("other", "1")]), MISS),
    ("query-name-case-sensitive", {"query": [{"name": "^debug$"}]}, request(query=[("DEBUG", "1")]), MISS),
    ("query-name-ignore-case", {"query": [{"name": "^debug$"}], "ignore_case": True}, request(query=[("DEBUG", "1")]), HIT),
    ("query-name-regex", {"query": [{"name": r"^filter\["}]}, request(query=[("filter[x]", "1")]), HIT),
    ("query-value", {"query": [{"name": "^limit$", "value": "^[0-9]{1,3}$"}]}, request(query=[("limit", "100")]), HIT),
    ("query-value-mismatch", {"query": [{"name": "^limit$", "value": "^[0-9]{1,3}$"}]}, request(query=[("limit", "1000")]), MISS),
    (
        "query-repeated-any",
        {"query": [{"name": "^limit$", "value": "^[0-9]{1,3}$"}]},
        request(query=[("limit", "abc"), ("limit", "5")]),
        HIT,
    ),
    (
        "query-regex-name-value-same-pair",
        {"query": [{"name": "^l", "value": "^5$"}]},
        request(query=[("limit", "abc"), ("other", "5")]),
        MISS,
    ),
    ("query-empty-value", {"query": [{"name": "^a$", "value": "^$"}]}, request(query=[("a", "")]), HIT),
    ("query-decoded-value", {"query": [{"name": "^q$", "value": "^a b$"}]}, request(query=[("q", "a b")]), HIT),
    ("query-absent-missing", {"query": [{"name": "^debug$", "presence": "absent"}]}, request(), HIT),
    ("query-absent-there", {"query": [{"name": "^debug$", "presence": "absent"}]}, request(query=[("debug", "")]), MISS),
    # JSON body
    ("json-value", {"body": [{"json_path": "$.model", "value": "^gpt-4o-mini$"}]}, request(body_json={"model": "gpt-4o-mini"}), HIT),
    ("json-value-mismatch", {"body": [{"json_path": "$.model", "value": "^gpt-4o-mini$"}]}, request(body_json={"model": "gpt-4o"}), MISS),
    ("json-int", {"body": [{"json_path": "$.n", "value": "^5$"}]}, request(body_json={"n": 5}), HIT),
    ("json-float", {"body": [{"json_path": "$.n", "value": r"^1\.5$"}]}, request(body_json={"n": 1.5}), HIT),
    ("json-bool", {"body": [{"json_path": "$.stream", "value": "^true$"}]}, request(body_json={"stream": True}), HIT),
    ("json-null", {"body": [{"json_path": "$.user", "value": "^null$"}]}, request(body_json={"user": None}), HIT),
    ("json-object-compact", {"body": [{"json_path": "$.o", "value": r'^\{"a":1,"b":"é"\}$'}]}, request(body_json={"o": {"a": 1, "b": "é"}}), HIT),
    ("json-array-any-element", {"body": [{"json_path": "$.tags", "value": "^admin$"}]}, request(body_json={"tags": ["x", "admin"]}), HIT),
    ("json-array-no-element", {"body": [{"json_path": "$.tags", "value": "^admin$"}]}, request(body_json={"tags": ["x", "y"]}), MISS),
    (
        "json-wildcard",
        {"body": [{"json_path": "$.messages[*].role", "value": "^system$"}]},
        request(body_json={"messages": [{"role": "user"}, {"role": "system"}]}),
        HIT,
    ),
    ("json-recursive", {"body": [{"json_path": "$..secret"}]}, request(body_json={"a": {"b": [{"secret": 1}]}}), HIT),
    ("json-top-level-array", {"body": [{"json_path": "$[*].a", "value": "^1$"}]}, request(body_json=[{"a": 2}, {"a": 1}]), HIT),
    ("json-present", {"body": [{"json_path": "$.stream"}]}, request(body_json={"stream": False}), HIT),
    ("json-present-empty-array", {"body": [{"json_path": "$.tools"}]}, request(body_json={"tools": []}), HIT),
    ("json-present-missing", {"body": [{"json_path": "$.stream"}]}, request(body_json={"model": "x"}), MISS),
    ("json-absent", {"body": [{"json_path": "$.stream", "presence": "absent"}]}, request(body_json={"model": "x"}), HIT),
    ("json-absent-there", {"body": [{"json_path": "$.stream", "presence": "absent"}]}, request(body_json={"stream": 0}), MISS),
    (
        "json-absent-value-other",
        {"body": [{"json_path": "$.model", "value": "^gpt-4$", "presence": "absent"}]},
        request(body_json={"model": "gpt-3"}),
        HIT,
    ),
    ("json-no-body", {"body": [{"json_path": "$.model"}]}, request(), MISS),
    ("json-no-body-absent", {"body": [{"json_path": "$.model", "presence": "absent"}]}, request(), HIT),
    ("json-scalar-body", {"body": [{"json_path": "$.model"}]}, request(body_json="just a string"), MISS),
    ("json-unicode", {"body": [{"json_path": "$.m", "value": "^café$"}]}, request(body_json={"m": "café"}), HIT),
    (
        "json-ignore-case",
        {"body": [{"json_path": "$.m", "value": "^gpt-4$"}], "ignore_case": True},
        request(body_json={"m": "GPT-4"}),
        HIT,
    ),
    # form body: json_path sees {name: [values...]}
    ("form-field", {"body": [{"json_path": "$.model", "value": "^gpt-4$"}]}, request(body_form=(("model", "gpt-4"),)), HIT),
    (
        "form-repeated-any",
        {"body": [{"json_path": "$.model", "value": "^gpt-4$"}]},
        request(body_form=(("model", "gpt-3"), ("model", "gpt-4"))),
        HIT,
    ),
    ("form-index", {"body": [{"json_path": "$.model[1]", "value": "^b$"}]}, request(body_form=(("model", "a"), ("model", "b"))), HIT),
    ("form-missing", {"body": [{"json_path": "$.model"}]}, request(body_form=(("other", "x"),)), MISS),
    ("form-absent", {"body": [{"json_path": "$.model", "presence": "absent"}]}, request(body_form=(("other", "x"),)), HIT),
    # raw body text
    ("raw-pattern", {"body": [{"pattern": "BEGIN [A-Z ]*PRIVATE KEY"}]}, request(body_text="x\n-----BEGIN RSA PRIVATE KEY-----\n"), HIT),
    ("raw-pattern-miss", {"body": [{"pattern": "PRIVATE KEY"}]}, request(body_text="hello"), MISS),
    ("raw-pattern-absent", {"body": [{"pattern": "PRIVATE KEY", "presence": "absent"}]}, request(body_text="hello"), HIT),
    ("raw-no-body", {"body": [{"pattern": "x"}]}, request(), MISS),
    ("raw-no-body-absent", {"body": [{"pattern": "x", "presence": "absent"}]}, request(), HIT),
    ("raw-ignore-case", {"body": [{"pattern": "private key"}], "ignore_case": True}, request(body_text="PRIVATE KEY"), HIT),
    ("raw-multiline-flag", {"body": [{"pattern": "(?m)^secret$"}]}, request(body_text="a\nsecret\nb"), HIT),
    ("raw-end-is-end-of-text", {"body": [{"pattern": "secret$"}]}, request(body_text="secret\n"), MISS),
    ("raw-on-json-body", {"body": [{"pattern": '"model"'}]}, request(body_json={"model": 1}, body_text='{"model": 1}'), HIT),
    # claims: never match an unverified caller
    ("claims-unverified", {"claims": [{"claim": "scope"}]}, request(), MISS),
    ("claims-unverified-absent", {"claims": [{"claim": "admin", "presence": "absent"}]}, request(), MISS),
    ("claims-present", {"claims": [{"claim": "scope"}]}, request(claims={"scope": "x"}), HIT),
    ("claims-missing", {"claims": [{"claim": "scope"}]}, request(claims={}), MISS),
    ("claims-absent", {"claims": [{"claim": "admin", "presence": "absent"}]}, request(claims={}), HIT),
    ("claims-absent-there", {"claims": [{"claim": "admin", "presence": "absent"}]}, request(claims={"admin": False}), MISS),
    (
        "claims-value-in-scope-string",
        {"claims": [{"claim": "scope", "value": "(^| )payments:write( |$)"}]},
        request(claims={"scope": "payments:read payments:write"}),
        HIT,
    ),
    ("claims-list-any", {"claims": [{"claim": "groups", "value": "^admins$"}]}, request(claims={"groups": ["devs", "admins"]}), HIT),
    ("claims-list-none", {"claims": [{"claim": "groups", "value": "^admins$"}]}, request(claims={"groups": ["devs"]}), MISS),
    ("claims-number", {"claims": [{"claim": "tier", "value": "^3$"}]}, request(claims={"tier": 3}), HIT),
    ("claims-bool", {"claims": [{"claim": "email_verified", "value": "^true$"}]}, request(claims={"email_verified": True}), HIT),
    (
        "claims-absent-value",
        {"claims": [{"claim": "groups", "value": "^admins$", "presence": "absent"}]},
        request(claims={"groups": ["devs"]}),
        HIT,
    ),
    (
        "claims-ignore-case",
        {"claims": [{"claim": "role", "value": "^admin$"}], "ignore_case": True},
        request(claims={"role": "Admin"}),
        HIT,
    ),
]


@pytest.mark.parametrize("fields, req, expected", [c[1:] for c in FIELDS], ids=[c[0] for c in FIELDS])
def test_fields(fields, req, expected):
    check(compile_scope([{"name": "r", "effect": "deny", **fields}]), req, expected)


# --------------------------------------------------------------------------
# All fields of one rule must match.

EVERY_FIELD = {
    "name": "r",
    "effect": "deny",
    "methods": ["POST"],
    "path": "^/v1/charges$",
    "headers": [{"name": "^x-env$", "value": "^prod$"}],
    "query": [{"name": "^expand$"}],
    "body": [{"json_path": "$.amount", "value": "^[0-9]{5,}$"}],
    "claims": [{"claim": "scope", "value": "payments"}],
}
MATCHING = dict(
    method="POST",
    path="/v1/charges",
    headers={"x-env": ("prod",)},
    query=[("expand", "customer")],
    body_json={"amount": 100000},
    claims={"scope": "payments"},
)
ONE_FIELD_OFF = [
    ("all-match", {}, HIT),
    ("method-off", {"method": "GET"}, MISS),
    ("path-off", {"path": "/v1/charges/1"}, MISS),
    ("header-off", {"headers": {"x-env": ("dev",)}}, MISS),
    ("query-off", {"query": []}, MISS),
    ("body-off", {"body_json": {"amount": 5}}, MISS),
    ("claims-off", {"claims": {"scope": "read"}}, MISS),
    ("claims-unverified", {"claims": None}, MISS),
]


@pytest.mark.parametrize("change, expected", [c[1:] for c in ONE_FIELD_OFF], ids=[c[0] for c in ONE_FIELD_OFF])
def test_every_field_must_match(change, expected):
    check(compile_scope([EVERY_FIELD]), request(**{**MATCHING, **change}), expected)


# --------------------------------------------------------------------------
# Several rules: any deny denies, else any allow allows, else the default.

SEMANTICS = [
    ("empty-default-allow", [], "allow", request(), DEFAULT_ALLOW),
    ("empty-default-deny", [], "deny", request(), DEFAULT_DENY),
    ("default-deny-allow-rule", [{"name": "a", "effect": "allow", "path": "^/v1/"}], "deny", request(path="/v1/x"), allowed("a")),
    ("default-deny-no-match", [{"name": "a", "effect": "allow", "path": "^/v1/"}], "deny", request(path="/v2/x"), DEFAULT_DENY),
    ("default-allow-deny-rule", [{"name": "d", "effect": "deny", "path": "^/admin"}], "allow", request(path="/admin"), denied("d")),
    (
        "deny-beats-higher-allow",
        [{"name": "a", "effect": "allow", "priority": 1000}, {"name": "d", "effect": "deny", "priority": 0}],
        "allow",
        request(),
        denied("d"),
    ),
    (
        "highest-priority-deny-reported",
        [{"name": "d1", "effect": "deny", "priority": 100}, {"name": "d2", "effect": "deny", "priority": 900}],
        "allow",
        request(),
        denied("d2"),
    ),
    (
        "priority-tie-declaration-order",
        [{"name": "d1", "effect": "deny"}, {"name": "d2", "effect": "deny"}],
        "allow",
        request(),
        denied("d1"),
    ),
    (
        "highest-priority-allow-reported",
        [{"name": "a1", "effect": "allow", "priority": 10}, {"name": "a2", "effect": "allow", "priority": 20}],
        "deny",
        request(),
        allowed("a2"),
    ),
    (
        "non-matching-deny-ignored",
        [{"name": "d", "effect": "deny", "priority": 1000, "path": "^/admin"}, {"name": "a", "effect": "allow"}],
        "deny",
        request(path="/v1"),
        allowed("a"),
    ),
    (
        "path-rule-outranks-header-rule",
        [
            {"name": "by-header", "effect": "deny", "priority": 100, "headers": [{"name": "^x-a$"}]},
            {"name": "by-path", "effect": "deny", "priority": 900, "path": "^/v1/"},
        ],
        "allow",
        request(path="/v1/x", headers={"x-a": ("1",)}),
        denied("by-path"),
    ),
    (
        "header-rule-outranks-path-rule",
        [
            {"name": "by-header", "effect": "deny", "priority": 900, "headers": [{"name": "^x-a$"}]},
            {"name": "by-path", "effect": "deny", "priority": 100, "path": "^/v1/"},
        ],
        "allow",
        request(path="/v1/x", headers={"x-a": ("1",)}),
        denied("by-header"),
    ),
    (
        "shared-path-pattern-by-method-delete",
        [
            {"name": "read", "effect": "allow", "methods": ["GET"], "path": "^/v1/"},
            {"name": "no-delete", "effect": "deny", "methods": ["DELETE"], "path": "^/v1/"},
        ],
        "deny",
        request("DELETE", "/v1/x"),
        denied("no-delete"),
    ),
    (
        "shared-path-pattern-by-method-get",
        [
            {"name": "read", "effect": "allow", "methods": ["GET"], "path": "^/v1/"},
            {"name": "no-delete", "effect": "deny", "methods": ["DELETE"], "path": "^/v1/"},
        ],
        "deny",
        request("GET", "/v1/x"),
        allowed("read"),
    ),
    (
        "shared-path-pattern-other-method",
        [
            {"name": "read", "effect": "allow", "methods": ["GET"], "path": "^/v1/"},
            {"name": "no-delete", "effect": "deny", "methods": ["DELETE"], "path": "^/v1/"},
        ],
        "deny",
        request("PUT", "/v1/x"),
        DEFAULT_DENY,
    ),
    (
        "same-pattern-present-and-absent-inside",
        [
            {"name": "admin", "effect": "deny", "path": "^/admin"},
            {"name": "not-admin", "effect": "allow", "path": {"pattern": "^/admin", "presence": "absent"}},
        ],
        "deny",
        request(path="/admin/x"),
        denied("admin"),
    ),
    (
        "same-pattern-present-and-absent-outside",
        [
            {"name": "admin", "effect": "deny", "path": "^/admin"},
            {"name": "not-admin", "effect": "allow", "path": {"pattern": "^/admin", "presence": "absent"}},
        ],
        "deny",
        request(path="/v1/x"),
        allowed("not-admin"),
    ),
    (
        "pattern-with-and-without-ignore-case",
        [
            {"name": "exact", "effect": "allow", "priority": 900, "path": "^/v1/"},
            {"name": "folded", "effect": "allow", "priority": 100, "path": "^/v1/", "ignore_case": True},
        ],
        "deny",
        request(path="/V1/x"),
        allowed("folded"),
    ),
    (
        "shared-header-values",
        [
            {"name": f"tenant-{i}", "effect": "deny", "headers": [{"name": "^x-tenant$", "value": f"^t{i}$"}]}
            for i in range(50)
        ],
        "allow",
        request(headers={"x-tenant": ("t37",)}),
        denied("tenant-37"),
    ),
    (
        "unverified-caller-skips-claims-rules",
        [
            {"name": "admins", "effect": "allow", "priority": 900, "claims": [{"claim": "admin", "value": "^true$"}]},
            {"name": "not-admin", "effect": "deny", "claims": [{"claim": "admin", "presence": "absent"}]},
        ],
        "deny",
        request(),
        DEFAULT_DENY,
    ),
]


@pytest.mark.parametrize("rules, default, req, expected", [c[1:] for c in SEMANTICS], ids=[c[0] for c in SEMANTICS])
def test_semantics(rules, default, req, expected):
    check(compile_scope(rules, default), req, expected)


# --------------------------------------------------------------------------
# explain(): every rule in report order, the first field that failed.


def test_explain_lists_every_rule_with_first_failure():
    scope = compile_scope(
        [
            {"name": "low", "effect": "deny", "priority": 100, "methods": ["DELETE"]},
            {"name": "tie-a", "effect": "deny", "path": "^/admin"},
            {"name": "high", "effect": "allow", "priority": 900, "path": "^/v1/"},
            {"name": "tie-b", "effect": "deny", "headers": [{"name": "^x-debug$"}]},
            {"name": "q", "effect": "deny", "priority": 50, "query": [{"name": "^a$"}, {"name": "^b$"}]},
            {"name": "c", "effect": "deny", "priority": 40, "claims": [{"claim": "sub"}]},
            {"name": "b", "effect": "deny", "priority": 30, "body": [{"json_path": "$.x"}]},
            {"name": "abs", "effect": "deny", "priority": 20, "path": {"pattern": "^/v1/", "presence": "absent"}},
        ],
        "deny",
    )
    trace = scope.explain(request("GET", "/v1/x", query=[("a", "1")]))
    assert trace.scope == "proxy"
    assert trace.result == allowed("high")
    assert trace.rules == (
        RuleTrace("high", "allow", 900, True, None, "path regex search '^/v1/' matched"),
        RuleTrace("tie-a", "deny", 500, False, "path", "path regex search '^/admin' did not match"),
        RuleTrace("tie-b", "deny", 500, False, "headers[0]"),
        RuleTrace("low", "deny", 100, False, "methods"),
        RuleTrace("q", "deny", 50, False, "query[1]"),
        RuleTrace("c", "deny", 40, False, "claims[0]"),
        RuleTrace("b", "deny", 30, False, "body[0]"),
        RuleTrace("abs", "deny", 20, False, "path", "path regex search '^/v1/' matched (presence: absent)"),
    )


def test_explain_names_the_path_form_that_matched():
    scope = compile_scope(
        [
            {"name": "prefix", "effect": "allow", "path": {"prefix": "/v1/charges"}},
            {"name": "glob", "effect": "allow", "path": {"glob": "/v1/charges/*"}},
            {"name": "regex", "effect": "allow", "path": {"regex": "/v1/charges/[a-z_0-9]+"}},
            {"name": "deep", "effect": "allow", "path": {"glob": "/v1/**/refunds"}},
        ],
        "deny",
    )
    notes = {t.rule: t.path for t in scope.explain(request("GET", "/v1/charges/ch_1")).rules}
    assert notes == {
        "prefix": "path prefix '/v1/charges' matched",
        "glob": "path glob '/v1/charges/*' matched",
        "regex": "path full-match regex '/v1/charges/[a-z_0-9]+' matched",
        "deep": "path glob '/v1/**/refunds' did not match",
    }


def test_explain_reports_the_deny_over_matched_allows():
    scope = compile_scope([{"name": "a", "effect": "allow", "priority": 1000}, {"name": "d", "effect": "deny", "priority": 1}])
    trace = scope.explain(request())
    assert trace.result == denied("d")
    assert [(t.rule, t.matched) for t in trace.rules] == [("a", True), ("d", True)]


# --------------------------------------------------------------------------
# Compilation.


def test_needs_body_and_claims():
    plain = compile_scope([{"name": "r", "effect": "deny", "path": "^/"}])
    assert (plain.needs_body, plain.needs_claims) == (False, False)
    body = compile_scope([{"name": "r", "effect": "deny", "body": [{"pattern": "x"}]}])
    assert (body.needs_body, body.needs_claims) == (True, False)
    claims = compile_scope([{"name": "r", "effect": "deny", "claims": [{"claim": "sub"}]}])
    assert (claims.needs_body, claims.needs_claims) == (False, True)
    assert len(claims) == 1


@pytest.mark.parametrize(
    "rules, default, message",
    [
        ([{"name": "a", "effect": "deny"}, {"name": "a", "effect": "allow"}], "allow", "proxy: duplicate rule name 'a'"),
        ([], "maybe", "default_effect must be 'allow' or 'deny', not 'maybe'"),
    ],
    ids=["duplicate-name", "bad-default"],
)
def test_compile_rejects(rules, default, message):
    with pytest.raises(ValueError) as info:
        compile_scope(rules, default)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "req, matches",
    [
        (request("POST", "/v1/chat/completions", body_json={"model": "gpt-4o"}), True),
        (request("GET", "/v1/chat/completions", body_json={"model": "gpt-4o"}), False),
        (request("POST", "/v1/embeddings", body_json={"model": "gpt-4o"}), False),
        (request("POST", "/v1/chat/completions", body_json={"model": "o1"}), False),
    ],
    ids=["matches", "method-off", "path-off", "body-off"],
)
def test_compile_when(req, matches):
    when = compile_when(
        Match.model_validate({"methods": ["POST"], "path": "^/v1/chat/", "body": [{"json_path": "$.model", "value": "^gpt-"}]})
    )
    assert when.needs_body
    assert when.evaluate(req).allowed is matches


# --------------------------------------------------------------------------
# PatternSet: one pass over many patterns, never a silent miss.


def test_pattern_set_search_semantics():
    ps = PatternSet(["^/v1/", "admin$", "(?i)^/V2", "é"])
    assert sorted(ps.match("/v1/admin")) == [0, 1]
    assert ps.match("/v2/x") == [2]
    assert ps.match("/café") == [3]
    assert ps.match("/admin\n") == []  # `$` is end of text, as in RE2
    assert ps.match(b"/v1/") == [0]
    assert ps.match("/x\udcff") == []


class _FailingSet:
    """Stands in for an RE2::Set whose DFA ran out of memory: the wrapper returns nothing."""

    def Match(self, text):
        return None


def test_pattern_set_falls_back_when_the_set_fails():
    ps = PatternSet(["^/v1/", "admin$", "^/v2"])
    offset, _, fallback = ps._chunks[0]
    ps._chunks[0] = (offset, _FailingSet(), fallback)
    assert sorted(ps.match("/v1/admin")) == [0, 1]
    assert ps.match("/v3") == []


def test_pattern_set_splits_what_does_not_compile(monkeypatch):
    small = rules_module.re2_options()
    small.max_mem = 1 << 16  # too small for the whole set, enough for a few patterns
    monkeypatch.setattr(rules_module, "_SET_OPTIONS", small)
    patterns = [f"^/v{i}/[a-z]+/items/[0-9]+(/sub)?$" for i in range(100)]
    ps = PatternSet(patterns)
    assert len(ps._chunks) > 1
    for text in ["/v7/abc/items/12", "/v99/x/items/1/sub", "/v100/x/items/1", "/v1/x/items/"]:
        assert ps.match(text) == [i for i, p in enumerate(patterns) if re2.search(p, text)]


@given(st.lists(st.sampled_from(["a", "^a", "a$", "b+", "(?i)A", "^$", "[0-9]", "é", "."]), min_size=1, max_size=6), st.text(max_size=8))
def test_pattern_set_agrees_with_re2_search(patterns, text):
    assert sorted(PatternSet(patterns).match(text)) == [i for i, p in enumerate(patterns) if re2.search(p, text)]


# --------------------------------------------------------------------------
# Repeated parameters (docs/security.md): the upstream may read any occurrence, so an
# allow rule must hold for every occurrence and a deny rule matches if it holds
# for some. Each case: one rule "r" of the given effect in a scope whose default
# is the other effect.

LIMIT = {"name": "^limit$", "value": "^[0-9]{1,3}$"}
LIMIT_ABSENT = {**LIMIT, "presence": "absent"}
ENV = {"name": "^x-env$", "value": "^prod$"}
MODEL = {"json_path": "$.model", "value": "^gpt-4o-mini$"}

OCCURRENCES = [
    # query, allow: every occurrence must match
    ("q-allow-one", "allow", {"query": [LIMIT]}, request(query=[("limit", "5")]), True),
    ("q-allow-dup-all-match", "allow", {"query": [LIMIT]}, request(query=[("limit", "5"), ("limit", "50")]), True),
    ("q-allow-dup-second-fails", "allow", {"query": [LIMIT]}, request(query=[("limit", "5"), ("limit", "500000")]), False),
    ("q-allow-dup-first-fails", "allow", {"query": [LIMIT]}, request(query=[("limit", "500000"), ("limit", "5")]), False),
    ("q-allow-missing", "allow", {"query": [LIMIT]}, request(query=[("other", "5")]), False),
    ("q-allow-name-regex-every-name", "allow", {"query": [{"name": "^l", "value": "^5$"}]}, request(query=[("limit", "5"), ("lim", "6")]), False),
    ("q-allow-name-only-dup", "allow", {"query": [{"name": "^expand$"}]}, request(query=[("expand", "a"), ("expand", "b")]), True),
    # query, allow + absent: no occurrence may match
    ("q-allow-absent-none", "allow", {"query": [LIMIT_ABSENT]}, request(), True),
    ("q-allow-absent-other-values", "allow", {"query": [LIMIT_ABSENT]}, request(query=[("limit", "x"), ("limit", "5000")]), True),
    ("q-allow-absent-one-matches", "allow", {"query": [LIMIT_ABSENT]}, request(query=[("limit", "x"), ("limit", "5")]), False),
    # query, deny: some occurrence matching is enough
    ("q-deny-dup-second-matches", "deny", {"query": [LIMIT]}, request(query=[("limit", "abc"), ("limit", "5")]), True),
    ("q-deny-dup-none-matches", "deny", {"query": [LIMIT]}, request(query=[("limit", "abc"), ("limit", "5000")]), False),
    ("q-deny-missing", "deny", {"query": [LIMIT]}, request(), False),
    # query, deny + absent: matches unless every occurrence matches
    ("q-deny-absent-none", "deny", {"query": [LIMIT_ABSENT]}, request(), True),
    ("q-deny-absent-all-match", "deny", {"query": [LIMIT_ABSENT]}, request(query=[("limit", "5"), ("limit", "6")]), False),
    ("q-deny-absent-one-fails", "deny", {"query": [LIMIT_ABSENT]}, request(query=[("limit", "5"), ("limit", "500000")]), True),
    # headers: the same, over every value of every header whose name matches
    ("h-allow-dup-one-fails", "allow", {"headers": [ENV]}, request(headers={"x-env": ("prod", "dev")}), False),
    ("h-allow-dup-all-match", "allow", {"headers": [ENV]}, request(headers={"x-env": ("prod", "prod")}), True),
    ("h-allow-name-regex", "allow", {"headers": [{"name": "^x-", "value": "^1$"}]}, request(headers={"x-a": ("1",), "x-b": ("2",)}), False),
    ("h-deny-dup-one-matches", "deny", {"headers": [ENV]}, request(headers={"x-env": ("dev", "prod")}), True),
    ("h-deny-absent-one-fails", "deny", {"headers": [{**ENV, "presence": "absent"}]}, request(headers={"x-env": ("prod", "dev")}), True),
    # form fields are repeated parameters too
    ("form-allow-dup-one-fails", "allow", {"body": [MODEL]}, request(body_form=(("model", "gpt-4o-mini"), ("model", "gpt-4o"))), False),
    ("form-allow-one", "allow", {"body": [MODEL]}, request(body_form=(("model", "gpt-4o-mini"),)), True),
    ("form-deny-dup-one-matches", "deny", {"body": [MODEL]}, request(body_form=(("model", "gpt-4o"), ("model", "gpt-4o-mini"))), True),
    ("form-deny-absent-one-fails", "deny", {"body": [{**MODEL, "presence": "absent"}]}, request(body_form=(("model", "gpt-4o-mini"), ("model", "o1"))), True),
    # JSON arrays are data: one element matching is enough, for either effect
    ("json-array-allow-any", "allow", {"body": [{"json_path": "$.tags", "value": "^a$"}]}, request(body_json={"tags": ["a", "b"]}), True),
    ("json-array-deny-any", "deny", {"body": [{"json_path": "$.tags", "value": "^a$"}]}, request(body_json={"tags": ["b", "a"]}), True),
    # a body that does not parse as JSON: no json_path condition of an allow rule holds on it
    ("opaque-allow-present", "allow", {"body": [{"json_path": "$.model"}]}, request(body_text="{model", body_opaque=True), False),
    ("opaque-allow-absent", "allow", {"body": [{"json_path": "$.stream", "presence": "absent"}]}, request(body_text="{x", body_opaque=True), False),
    ("opaque-allow-raw-pattern", "allow", {"body": [{"pattern": "^hello"}]}, request(body_text="hello", body_opaque=True), True),
    ("opaque-deny-present", "deny", {"body": [MODEL]}, request(body_text="{model", body_opaque=True), False),
    ("opaque-deny-absent", "deny", {"body": [{**MODEL, "presence": "absent"}]}, request(body_text="{model", body_opaque=True), True),
    ("no-body-allow-absent", "allow", {"body": [{"json_path": "$.stream", "presence": "absent"}]}, request(), True),
]


@pytest.mark.parametrize("effect, fields, req, matches", [c[1:] for c in OCCURRENCES], ids=[c[0] for c in OCCURRENCES])
def test_repeated_parameters(effect, fields, req, matches):
    default = "deny" if effect == "allow" else "allow"
    rule = ScopeResult(effect, "r", reasons.ALLOWED_BY_RULE if effect == "allow" else reasons.DENIED_BY_RULE)
    other = DEFAULT_DENY if default == "deny" else DEFAULT_ALLOW
    check(compile_scope([{"name": "r", "effect": effect, **fields}], default), req, rule if matches else other)


WHEN_OCCURRENCES = [
    # a meter's `when` counts a request if any reading matches (as a deny rule)
    ({"query": [LIMIT]}, request(query=[("limit", "5"), ("limit", "500000")]), True),
    ({"query": [LIMIT]}, request(query=[("limit", "x"), ("limit", "500000")]), False),
    ({"query": [LIMIT_ABSENT]}, request(query=[("limit", "5"), ("limit", "500000")]), True),
    ({"body": [{"json_path": "$.model"}]}, request(body_text="{", body_opaque=True), False),
]


@pytest.mark.parametrize("fields, req, matches", WHEN_OCCURRENCES)
def test_when_reads_repeated_parameters_as_a_deny_rule(fields, req, matches):
    assert compile_when(Match.model_validate(fields)).evaluate(req).allowed is matches


# --------------------------------------------------------------------------
# The indexed evaluation agrees with a plain reading of the contract.


def _reference(rules: list[Rule], default: str, req: RuleRequest) -> ScopeResult:
    def search(rule, pattern, text):
        return re2.search(("(?i)" if rule.ignore_case else "") + pattern, text) is not None

    def matches(rule):
        if rule.methods is not None and req.method.upper() not in rule.methods:
            return False
        if rule.path is not None and search(rule, rule.path.pattern, req.path) == (rule.path.presence == "absent"):
            return False
        # A reading of a repeated parameter is one of its occurrences (None: there is none);
        # an allow rule must hold on every reading, a deny rule on some reading.
        quantifier = all if rule.effect == "allow" else any

        def holds(m, occurrences):
            def on(v):
                return (v is not None and (m.value is None or search(rule, m.value, v))) != (m.presence == "absent")

            return quantifier(on(v) for v in (occurrences or [None]))

        for h in rule.headers:
            if not holds(h, [v for n, vs in req.headers.items() if re2.search("(?i)" + h.name, n) for v in vs]):
                return False
        for q in rule.query:
            if not holds(q, [v for n, v in req.query if search(rule, q.name, n)]):
                return False
        return True

    matched = [r for r in rules if matches(r)]
    for effect, reason in (("deny", reasons.DENIED_BY_RULE), ("allow", reasons.ALLOWED_BY_RULE)):
        best = [r for r in matched if r.effect == effect]
        if best:
            top = max(r.priority for r in best)
            return ScopeResult(effect, next(r.name for r in best if r.priority == top), reason)
    return DEFAULT_ALLOW if default == "allow" else DEFAULT_DENY


_PATH = st.one_of(
    st.none(),
    st.sampled_from(["^/v1/", "^/v1/admin", "admin$", "(?i)^/V1/", "^/v2", "x"]),
    st.builds(lambda p: {"pattern": p, "presence": "absent"}, st.sampled_from(["^/v1/", "admin"])),
)
_HEADERS = st.sampled_from([[], [{"name": "^x-a$"}], [{"name": "^x-", "value": "^1$"}], [{"name": "^X-A$", "value": "2", "presence": "absent"}]])
_QUERY = st.sampled_from([[], [{"name": "^q$", "value": "^[0-9]+$"}], [{"name": "q", "presence": "absent"}], [{"name": "^Q$"}]])
_RULE = st.fixed_dictionaries(
    {
        "effect": st.sampled_from(["allow", "deny"]),
        "priority": st.sampled_from([0, 500, 1000]),
        "methods": st.sampled_from([None, ["GET"], ["POST", "DELETE"]]),
        "path": _PATH,
        "headers": _HEADERS,
        "query": _QUERY,
        "ignore_case": st.booleans(),
    }
)
_REQUEST = st.builds(
    request,
    method=st.sampled_from(["GET", "post", "DELETE", "PUT"]),
    path=st.sampled_from(["/v1/admin", "/V1/x", "/v2/admin", "/", "/v1/", "/x"]),
    headers=st.dictionaries(st.sampled_from(["x-a", "x-b", "accept"]), st.sampled_from([("1",), ("2",), ("1", "2"), ("",)]), max_size=3),
    query=st.lists(st.tuples(st.sampled_from(["q", "Q", "p"]), st.sampled_from(["1", "a", ""])), max_size=3),
)


@given(st.lists(_RULE, max_size=8), st.sampled_from(["allow", "deny"]), _REQUEST)
def test_evaluate_agrees_with_reference(specs, default, req):
    rules = [Rule.model_validate({"name": f"r{i}", **{k: v for k, v in s.items() if v is not None}}) for i, s in enumerate(specs)]
    scope = ScopeRules.compile("proxy", rules, default)
    expected = _reference(rules, default, req)
    assert scope.evaluate(req) == expected
    assert scope.explain(req).result == expected
