"""The `mcp` rule condition (rr_addon.core.mcp): JSON-RPC calls, batches, what an
attacker tries (other shapes, case, huge batches, bodies that do not parse)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from rr_addon.policy.rules_schema import Rule
from rr_addon.core import mcp
from rr_addon.core import reasons
from rr_addon.core.rules import RuleRequest, ScopeResult, ScopeRules, compile_when
from rr_addon.policy.rules_schema import Match

DENY_DELETE = {"name": "no-delete", "effect": "deny", "mcp": {"method": "^tools/call$", "tool": "^(delete|drop)_"}}
DENY_ETC = {"name": "no-etc", "effect": "deny", "mcp": {"method": "^tools/call$", "arguments": [{"json_path": "$.path", "value": "^/etc/"}]}}
ALLOW_READ = {"name": "read-only", "effect": "allow", "mcp": {"method": "^(initialize|notifications/initialized|tools/list)$|^tools/call$", "tool": "^read_"}}
ALLOW_TMP = {"name": "tmp-only", "effect": "allow", "mcp": {"method": "^tools/call$", "arguments": [{"json_path": "$.path", "value": "^/tmp/"}]}}


def scope(rules: list[dict], default: str = "allow") -> ScopeRules:
    return ScopeRules.compile("target", [Rule.model_validate(r) for r in rules], default)


def call(tool: str | None = None, method: str = "tools/call", id: int | None = 1, **arguments) -> dict:
    msg: dict = {"jsonrpc": "2.0", "method": method}
    if id is not None:
        msg["id"] = id
    if tool is not None:
        msg["params"] = {"name": tool, "arguments": arguments}
    return msg


def req(body, *, opaque: bool = False) -> RuleRequest:
    text = body if isinstance(body, str) else json.dumps(body)
    return RuleRequest("POST", "/mcp", {}, (), None if opaque else json.loads(text), None, text, None, opaque)


def decides(scope_: ScopeRules, body, **kw) -> ScopeResult:
    r = req(body, **kw)
    result = scope_.evaluate(r)
    assert scope_.explain(r).result == result
    return result


DENIED = ScopeResult("deny", "no-delete", reasons.DENIED_BY_RULE)
PASSES = ScopeResult("allow", None, reasons.DEFAULT_ALLOWS)


@pytest.mark.parametrize(
    "body, expected",
    [
        (call("delete_file", path="/x"), DENIED),
        (call("drop_table"), DENIED),
        (call("read_file", path="/x"), PASSES),
        (call("delete_file", method="tools/list"), PASSES),
        ({"method": "tools/call", "params": {"name": "delete_file"}}, DENIED),  # no "jsonrpc": lenient servers accept it
        ({"jsonrpc": "2.0", "Method": "tools/call", "Params": {"Name": "delete_file"}}, DENIED),  # case-insensitive decoders
        ([call("read_file", id=1), call("delete_file", id=2)], DENIED),  # any call of a batch
        ([call("read_file", id=1), 5, {"jsonrpc": "2.0", "id": 9, "result": {}}], PASSES),
        ({"model": "gpt-4o", "tool": "delete_file"}, PASSES),  # not JSON-RPC: the condition does not match
        ([], PASSES),
        ([call("read_file", id=i) for i in range(mcp.MAX_BATCH + 1)], DENIED),  # too many to vouch for: fail closed
    ],
)
def test_a_deny_rule_matches_if_any_call_matches(body, expected):
    assert decides(scope([DENY_DELETE]), body) == expected


def test_a_body_that_is_not_json_matches_deny_rules_and_no_allow_rule():
    assert decides(scope([DENY_DELETE]), '{"method": "tools/call", "params": {"name": "delete_file"},}', opaque=True) == DENIED
    assert decides(scope([ALLOW_READ], "deny"), "not json", opaque=True) == ScopeResult("deny", None, reasons.DEFAULT_DENIES)
    assert decides(scope([DENY_DELETE]), "", opaque=True) == PASSES  # no body: nothing to vouch for


ALLOWED = ScopeResult("allow", "read-only", reasons.ALLOWED_BY_RULE)
REFUSED = ScopeResult("deny", None, reasons.DEFAULT_DENIES)


@pytest.mark.parametrize(
    "body, expected",
    [
        (call("read_file"), ALLOWED),
        (call("delete_file"), REFUSED),
        ([call("read_file", id=1), call("read_dir", id=2)], ALLOWED),
        ([call("read_file", id=1), call("delete_file", id=2)], REFUSED),  # an allow rule needs every call
        ([call("read_file", id=1), {"jsonrpc": "2.0", "id": 3, "result": {}}], REFUSED),  # a response is no call it allows
        ([call("read_file", id=i) for i in range(mcp.MAX_BATCH + 1)], REFUSED),
        (call(method="initialize"), REFUSED),  # no params.name: the tool pattern cannot match
        ({"model": "x"}, REFUSED),
    ],
)
def test_an_allow_rule_allows_only_if_every_call_matches(body, expected):
    assert decides(scope([ALLOW_READ], "deny"), body) == expected


def test_arguments_any_node_for_deny_every_node_for_allow():
    deny, allow = scope([DENY_ETC]), scope([ALLOW_TMP], "deny")
    assert decides(deny, call("write", path="/etc/passwd")).rule == "no-etc"
    assert decides(deny, call("write", path=["/tmp/a", "/etc/passwd"])).rule == "no-etc"
    assert decides(deny, call("write", path="/tmp/a")) == PASSES
    assert decides(deny, call("write", other="/etc/passwd")) == PASSES
    assert decides(allow, call("write", path="/tmp/a")).rule == "tmp-only"
    assert decides(allow, call("write", path=["/tmp/a", "/etc/passwd"])) == REFUSED  # every node, for an allow rule
    assert decides(allow, call("write", other="/tmp/a")) == REFUSED  # nothing selected
    absent = scope([{"name": "needs-dry-run", "effect": "deny", "mcp": {"tool": "^deploy$", "arguments": [{"json_path": "$.dry_run", "value": "^true$", "presence": "absent"}]}}])
    assert decides(absent, call("deploy", dry_run=True)) == PASSES
    assert decides(absent, call("deploy", dry_run=False)).rule == "needs-dry-run"
    assert decides(absent, call("deploy")).rule == "needs-dry-run"


def test_a_meters_when_counts_a_batch_if_any_call_matches():
    when = compile_when(Match.model_validate({"mcp": {"tool": "^search$"}}))
    assert when.evaluate(req([call("read", id=1), call("search", id=2)])).allowed
    assert not when.evaluate(req([call("read", id=1)])).allowed


def test_mcp_rules_need_the_body_and_explain_says_which_call_matched():
    s = scope([DENY_DELETE, ALLOW_READ])
    assert s.needs_body
    trace = {t.rule: t for t in s.explain(req([call("read_file", id=1), call("delete_file", id=2)])).rules}
    assert trace["no-delete"].mcp == "mcp: tools/call read_file did not match; tools/call delete_file matched"
    assert trace["read-only"].mcp == "mcp: tools/call read_file matched; tools/call delete_file did not match"
    assert trace["read-only"].failed == "mcp"
    assert s.explain(req({"a": 1})).rules[0].mcp == "mcp: the body is not JSON-RPC"


def test_audit_fields_name_the_method_and_tool():
    assert mcp.audit_fields(call("read_file")) == {"mcp_method": "tools/call", "mcp_tool": "read_file"}
    assert mcp.audit_fields([call("a", id=1), call(method="tools/list", id=2)]) == {"mcp_method": "tools/call,tools/list", "mcp_tool": "a"}
    assert mcp.audit_fields({"model": "x"}) == {}
    assert len(mcp.audit_fields(call("x" * 10_000))["mcp_tool"]) == mcp.AUDIT_CHARS


@pytest.mark.parametrize(
    "spec, message",
    [
        ({}, "needs 'method', 'tool' or 'arguments'"),
        ({"tool": "(?=x)"}, "RE2 has no look-around"),
        ({"tool": ""}, "empty pattern"),
        ({"arguments": [{"json_path": "$..[", "value": "x"}]}, "json_path"),
        ({"tools": "x"}, "tools"),
    ],
)
def test_bad_mcp_conditions_are_refused_with_the_field_named(spec, message):
    with pytest.raises(ValidationError, match=message):
        Rule.model_validate({"name": "r", "effect": "deny", "mcp": spec})


def test_the_documented_allow_list_allows_reads_and_refuses_everything_else():
    rules = [
        {"name": "session", "effect": "allow", "mcp": {"method": "^(initialize|ping|notifications/.+|tools/list)$"}},
        {"name": "read-tools", "effect": "allow", "mcp": {"method": "^tools/call$", "tool": "^(read_file|search)$"}},
        {"name": "session-stream", "effect": "allow", "methods": ["GET", "DELETE"]},
    ]
    s = scope(rules, "deny")
    assert decides(s, call(method="initialize")).rule == "session"
    assert decides(s, call(method="notifications/initialized", id=None)).rule == "session"
    assert decides(s, call("search", q="x")).rule == "read-tools"
    assert decides(s, call("delete_file")) == REFUSED
    assert decides(s, [call(method="initialize", id=1), call("read_file", id=2)]) == REFUSED  # each rule must match every call
    assert s.evaluate(RuleRequest("GET", "/mcp")).rule == "session-stream"
