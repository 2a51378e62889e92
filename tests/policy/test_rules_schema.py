import textwrap

import pytest
from pydantic import Field, TypeAdapter, ValidationError

from rr_addon.config import load
from rr_addon.policy.rules_schema import BodyMatch, ClaimMatch, HeaderMatch, PathMatch, QueryMatch, Rule, RuleList
from rr_addon.policy.schema import Model


def test_defaults():
    rule = Rule.model_validate({"name": "r", "effect": "deny"})
    assert rule.priority == 500
    assert rule.methods is None
    assert rule.path is None
    assert (rule.headers, rule.query, rule.body, rule.claims) == ([], [], [], [])
    assert rule.ignore_case is False


def test_full_rule():
    rule = Rule.model_validate(
        {
            "name": "no-deletes",
            "effect": "deny",
            "priority": 900,
            "methods": ["delete", "DELETE", "Post"],
            "path": "^/v1/customers/",
            "headers": [{"name": "(?i)^x-debug$", "presence": "present"}],
            "query": [{"name": "^limit$", "value": "^[0-9]{1,3}$"}],
            "body": [{"json_path": "$.model", "value": "^gpt-4o-mini$"}, {"pattern": "secret", "presence": "absent"}],
            "claims": [{"claim": "scope", "value": "payments:write"}],
            "ignore_case": True,
        }
    )
    assert rule.methods == ["DELETE", "POST"]
    assert rule.path == PathMatch(pattern="^/v1/customers/", presence="present")
    assert rule.headers == [HeaderMatch(name="(?i)^x-debug$")]
    assert rule.query == [QueryMatch(name="^limit$", value="^[0-9]{1,3}$")]
    assert rule.body == [BodyMatch(json_path="$.model", value="^gpt-4o-mini$"), BodyMatch(pattern="secret", presence="absent")]
    assert rule.claims == [ClaimMatch(claim="scope", value="payments:write")]


def test_path_mapping_form():
    rule = Rule.model_validate({"name": "r", "effect": "allow", "path": {"pattern": "^/admin", "presence": "absent"}})
    assert rule.path == PathMatch(pattern="^/admin", presence="absent")


LOOK_AHEAD = "not a valid RE2 regex: invalid perl operator: (?= (RE2 has no look-around)"
LOOK_BEHIND = "not a valid RE2 regex: invalid perl operator: (?<= (RE2 has no look-around)"
NEG_LOOK_BEHIND = "not a valid RE2 regex: invalid perl operator: (?<! (RE2 has no look-around)"
BACKREF = "not a valid RE2 regex: invalid escape sequence: \\1 (RE2 has no back-references)"
NAMED_BACKREF = "not a valid RE2 regex: invalid escape sequence: \\k (RE2 has no back-references)"

INVALID = [
    ("path-backref", {"path": "(a)\\1"}, ("path",), BACKREF),
    ("path-lookahead", {"path": "^/v1(?=/admin)"}, ("path",), LOOK_AHEAD),
    ("path-mapping-lookbehind", {"path": {"pattern": "(?<=v1)/admin"}}, ("path", "pattern"), LOOK_BEHIND),
    ("path-bad-presence", {"path": {"pattern": "x", "presence": "maybe"}}, ("path", "presence"), "Input should be 'present' or 'absent'"),
    ("path-unbalanced", {"path": "^/v1/("}, ("path",), "not a valid RE2 regex: missing ): ^/v1/("),
    ("path-empty", {"path": ""}, ("path",), "an empty pattern matches everything; omit the field instead"),
    ("header-name-lookbehind", {"headers": [{"name": "(?<!x-)debug"}]}, ("headers", 0, "name"), NEG_LOOK_BEHIND),
    ("header-value-backref", {"headers": [{"name": "^a$", "value": "(x)\\1"}]}, ("headers", 0, "value"), BACKREF),
    ("header-missing-name", {"headers": [{"value": "x"}]}, ("headers", 0, "name"), "Field required"),
    ("query-name-lookahead", {"query": [{"name": "a(?=b)"}]}, ("query", 0, "name"), LOOK_AHEAD),
    ("query-value-named-backref", {"query": [{"name": "a", "value": "(?P<x>a)\\k<x>"}]}, ("query", 0, "value"), NAMED_BACKREF),
    ("body-value-lookahead", {"body": [{"json_path": "$.a", "value": "a(?=b)"}]}, ("body", 0, "value"), LOOK_AHEAD),
    ("body-pattern-backref", {"body": [{"pattern": "(a)\\1"}]}, ("body", 0, "pattern"), BACKREF),
    ("body-bad-json-path", {"body": [{"json_path": "$.a["}]}, ("body", 0, "json_path"), "not a valid JSONPath: Parse error near the end of string!"),
    ("body-empty-json-path", {"body": [{"json_path": " "}]}, ("body", 0, "json_path"), "an empty JSONPath"),
    (
        "body-json-path-computed-value",
        {"body": [{"json_path": "$.a.`len`"}]},
        ("body", 0, "json_path"),
        "``len`` computes a value rather than selecting part of the document",
    ),
    (
        # `=~` in a filter is RE2, as in filters and meters (one dialect); a bad regex is refused here.
        "body-json-path-bad-regex-filter",
        {"body": [{"json_path": '$.m[?(@.a =~ "(x")]'}]},
        ("body", 0, "json_path"),
        "not a valid RE2 regex '(x': missing ): (x",
    ),
    ("body-neither", {"body": [{"value": "x"}]}, ("body", 0), "a body matcher needs exactly one of 'json_path' or 'pattern'"),
    ("body-both", {"body": [{"json_path": "$.a", "pattern": "x"}]}, ("body", 0), "a body matcher needs exactly one of 'json_path' or 'pattern'"),
    (
        "body-pattern-with-value",
        {"body": [{"pattern": "x", "value": "y"}]},
        ("body", 0),
        "'value' goes with 'json_path'; a 'pattern' matches the raw body itself",
    ),
    ("claims-value-lookbehind", {"claims": [{"claim": "scope", "value": "(?<=a)b"}]}, ("claims", 0, "value"), LOOK_BEHIND),
    ("claims-empty-name", {"claims": [{"claim": ""}]}, ("claims", 0, "claim"), "String should have at least 1 character"),
    ("methods-empty", {"methods": []}, ("methods",), "an empty list matches no method; omit 'methods' to match any"),
    ("methods-not-token", {"methods": ["GET POST"]}, ("methods",), "'GET POST' is not an HTTP method"),
    ("priority-too-high", {"priority": 1001}, ("priority",), "Input should be less than or equal to 1000"),
    ("priority-negative", {"priority": -1}, ("priority",), "Input should be greater than or equal to 0"),
    ("priority-string", {"priority": "900"}, ("priority",), "Input should be a valid integer"),
    ("effect-unknown", {"effect": "maybe"}, ("effect",), "Input should be 'allow', 'deny' or 'approve'"),
    (
        "name-invalid",
        {"name": "no deletes"},
        ("name",),
        "must be 1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit",
    ),
    ("unknown-field", {"paths": "^/"}, ("paths",), "Extra inputs are not permitted"),
    ("approval-without-approve", {"approval": {"timeout": 5}}, (), "'approval' goes with effect: approve (this rule's effect is deny)"),
    ("approval-timeout-zero", {"effect": "approve", "approval": {"timeout": 0}}, ("approval", "timeout"), "Input should be greater than or equal to 1"),
    ("approval-timeout-too-long", {"effect": "approve", "approval": {"timeout": 3601}}, ("approval", "timeout"), "Input should be less than or equal to 3600"),
    ("approval-timeout-string", {"effect": "approve", "approval": {"timeout": "5m"}}, ("approval", "timeout"), "Input should be a valid integer"),
    ("approval-notify-plain-http", {"effect": "approve", "approval": {"notify": {"url": "http://hooks.example.com/x"}}}, ("approval", "notify", "url"),
     "'http://hooks.example.com/x': plain http is only allowed to a loopback address; use https"),
    ("approval-notify-credentials", {"effect": "approve", "approval": {"notify": {"url": "https://u:pw@hooks.example.com/x"}}}, ("approval", "notify", "url"),
     "'https://***@hooks.example.com/x': credentials do not belong in the URL"),
    ("flags-not-a-field", {"flags": "i"}, ("flags",), "Extra inputs are not permitted"),
]


@pytest.mark.parametrize("fields, loc, message", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid(fields, loc, message):
    with pytest.raises(ValidationError) as info:
        Rule.model_validate({"name": "r", "effect": "deny", **fields})
    errors = [(e["loc"], e["msg"].removeprefix("Value error, ")) for e in info.value.errors()]
    assert errors == [(loc, message)]


def test_rule_list_names_are_unique():
    adapter = TypeAdapter(RuleList)
    assert len(adapter.validate_python([{"name": "a", "effect": "deny"}, {"name": "b", "effect": "allow"}])) == 2
    with pytest.raises(ValidationError, match="duplicate rule name 'a'"):
        adapter.validate_python([{"name": "a", "effect": "deny"}, {"name": "a", "effect": "allow"}])


# The loader turns pydantic errors into "file:line: object.field: message". The
# lead adds `rules: RuleList` to Target, Proxy and credentials; this document
# model stands in for that.


class _Credential(Model):
    name: str
    rules: RuleList = Field(default_factory=list)


class _Target(Model):
    name: str
    rules: RuleList = Field(default_factory=list)


class _Proxy(Model):
    name: str
    credentials: list[_Credential] = Field(default_factory=list)
    rules: RuleList = Field(default_factory=list)


class _Document(Model):
    targets: list[_Target] = Field(default_factory=list)
    proxies: list[_Proxy] = Field(default_factory=list)


DOCUMENT = textwrap.dedent(
    """\
    targets:
      - name: stripe
        rules:
          - name: ok
            effect: allow
            path: "^/v1/"
          - name: no-lookahead
            effect: deny
            headers: [{name: "^x-(?=debug)", presence: present}]
    proxies:
      - name: p
        rules:
          - name: no-deletes
            effect: deny
            methods: [DELETE]
            path: "^/v1/(customers)/\\\\1"
          - name: body-both
            effect: deny
            body:
              - {json_path: "$.a", pattern: "x"}
        credentials:
          - name: agent-1
            rules:
              - name: dup
                effect: deny
              - name: dup
                effect: allow
                claims: [{claim: scope, value: "(?<=pay)ments"}]
    """
)


def test_errors_through_the_loader(tmp_path, monkeypatch):
    monkeypatch.setattr(load, "Config", _Document)
    path = tmp_path / "rules.yaml"
    path.write_text(DOCUMENT)
    data, lines = load.read_yaml(path)
    with pytest.raises(load.ConfigErrors) as info:
        load.parse_document("rules.yaml", data, lines)
    # The loader names list items by their `name` key, so a header matcher
    # appears as headers[<its name regex>].
    assert [str(e) for e in info.value.errors] == [
        "rules.yaml:9: targets[stripe].rules[no-lookahead].headers[^x-(?=debug)].name: " + LOOK_AHEAD,
        "rules.yaml:28: proxies[p].credentials[agent-1].rules[dup].claims[0].value: " + LOOK_BEHIND,
        "rules.yaml:16: proxies[p].rules[no-deletes].path: " + BACKREF,
        "rules.yaml:20: proxies[p].rules[body-both].body[0]: a body matcher needs exactly one of 'json_path' or 'pattern'",
    ]


def test_duplicate_names_through_the_loader(tmp_path, monkeypatch):
    monkeypatch.setattr(load, "Config", _Document)
    path = tmp_path / "rules.yaml"
    path.write_text("proxies:\n  - name: p\n    rules:\n      - {name: a, effect: deny}\n      - {name: a, effect: allow}\n")
    data, lines = load.read_yaml(path)
    with pytest.raises(load.ConfigErrors) as info:
        load.parse_document("rules.yaml", data, lines)
    assert [str(e) for e in info.value.errors] == ["rules.yaml:4: proxies[p].rules: duplicate rule name 'a'"]


def test_approve_rules_default_their_approval():
    rule = Rule.model_validate({"name": "r", "effect": "approve"})
    assert rule.hold.timeout == 300 and rule.hold.notify is None
