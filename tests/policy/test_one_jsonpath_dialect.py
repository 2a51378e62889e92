"""One JSONPath dialect (issue 14): every place a configuration names a JSONPath
gives the same answer for the same path and document.

The places: a rule's `body[].json_path` (allow and deny rules, through decide()
so the request body is parsed as rules parse it), a meter's `when`, a meter's
`response_value.json_path`, and a response filter's `retain` and `destroy`.
(Validation uses JSON Schema, not JSONPath.) Every corpus path selects numbers,
so `response_value` finds a count exactly when the path selects something."""

from __future__ import annotations

import copy

import pytest

from rr_addon.policy.meters_schema import MeterSpec
from rr_addon.policy.bodies import parse_json
from rr_addon.core.decide import admit, decide, rule_request
from rr_addon.policy.filters import compile_filter
from rr_addon.core.quota import compile_meters
from rr_addon.core.snapshot import When
from rr_addon.core.types import RequestFacts
from rr_addon.testing.snapshots import snapshot_from

# (path, document, selects something)
CORPUS = [
    # Exact numbers: 1.0000000000000001 is not 1 (a binary float would say it is).
    ("$.items[?(@.n == 1)].n", '{"items": [{"n": 1.0000000000000001}]}', False),
    ("$.items[?(@.n == 1)].n", '{"items": [{"n": 1}]}', True),
    ("$.items[?(@.n == 1)].n", '{"items": [{"n": 1.0}]}', True),
    ("$.items[?(@.n > 0.1)].n", '{"items": [{"n": 0.10000000000000001}]}', True),
    ("$.items[?(@.n > 0.1)].n", '{"items": [{"n": 0.1}]}', False),
    ("$.items[?(@.n == 100)].n", '{"items": [{"n": 1e2}]}', True),
    # `=~` is RE2 with search semantics, in rules too.
    ('$.items[?(@.s =~ "^ab")].n', '{"items": [{"s": "abc", "n": 2}]}', True),
    ('$.items[?(@.s =~ "^ab")].n', '{"items": [{"s": "xab", "n": 2}]}', False),
    # Booleans are not numbers; strings are not numbers.
    ("$.items[?(@.n == 1)].m", '{"items": [{"n": true, "m": 3}]}', False),
    ('$.items[?(@.n == "1")].m', '{"items": [{"n": 1, "m": 3}]}', False),
    ('$.items[?(@.n == "1")].m', '{"items": [{"n": "1", "m": 3}]}', True),
    # Logical operators, missing members.
    ("$.items[?(@.n == 1 && @.m == 2)].m", '{"items": [{"n": 1, "m": 2}]}', True),
    ("$.items[?(@.n == 1 && @.m == 2)].m", '{"items": [{"n": 1, "m": 3}]}', False),
    ("$.items[?(@.n == 1 || @.m == 2)].m", '{"items": [{"n": 0, "m": 2}]}', True),
    ("$.items[?(@.x != 1)].m", '{"items": [{"m": 2}]}', True),
    # Names do not select from arrays; indexes and slices do.
    ("$.a.b", '{"a": {"b": 0}}', True),
    ("$.a.b", '{"a": [{"b": 0}]}', False),
    ("$.a[*].b", '{"a": [{"b": 0}]}', True),
    ("$.a[-1].b", '{"a": [{"b": 0}, {"c": 1}]}', False),
    ("$.a[0:1].b", '{"a": [{"b": 0}, {"c": 1}]}', True),
    ("$..b", '{"a": {"x": [{"b": 5}]}}', True),
    ("$..b", '{"a": {"x": [{"c": 5}]}}', False),
    ("$['a b'].c", '{"a b": {"c": 7}}', True),
]
IDS = [f"{i}:{p}" for i, (p, _, _) in enumerate(CORPUS)]


def _config(path: str) -> dict:
    def proxy(name: str, effect: str, default: str) -> dict:
        return {
            "name": name,
            "default_effect": default,
            "rules": [{"name": "body", "effect": effect, "body": [{"json_path": path}]}],
            "targets": [{"target": "api"}],
            "credentials": [{"name": "c", "auth": "api_key", "secret": f"key-{name}"}],
        }

    return {
        "targets": [{"name": "api", "hosts": ["api.example.com"], "credentials": [{"name": "k", "kind": "bearer", "secret": "s"}]}],
        "proxies": [proxy("denies", "deny", "allow"), proxy("allows", "allow", "deny")],
    }


def _rule_answers(path: str, document: str) -> tuple[bool, bool]:
    """(the deny rule denied, the allow rule allowed) for a POST of `document`."""
    snap = snapshot_from(_config(path))

    def allowed(proxy: str) -> bool:
        headers = (("x-rr-authorization", f"key-{proxy}"), ("content-type", "application/json"))
        facts = RequestFacts("POST", "https", "api.example.com", 443, "/v1/x", headers, (), document.encode())
        return decide(snap, facts, 0.0).decision.allowed

    return not allowed("denies"), allowed("allows")


@pytest.mark.parametrize("path, document, selects", CORPUS, ids=IDS)
def test_every_place_gives_the_same_answer(path, document, selects):
    denied, allowed = _rule_answers(path, document)

    when, value = compile_meters(
        [
            MeterSpec(name="when", when={"body": [{"json_path": path}]}),
            MeterSpec(name="value", type="response_value", response_value={"json_path": path}),
        ],
        When,
    )
    snap = snapshot_from(_config(path))
    headers = (("x-rr-authorization", "key-denies"), ("content-type", "application/json"))
    facts = RequestFacts("POST", "https", "api.example.com", 443, "/v1/x", headers, (), document.encode())
    request = rule_request(admit(snap, facts, 0.0), facts)
    counted = when.when(request)
    measured = value.source(None, parse_json(document)) is not None

    doc = parse_json(document)
    retained = compile_filter(retain_paths=[path]).apply(copy.deepcopy(doc)) not in ({}, [])
    destroyed = compile_filter(destroy_paths=[path]).apply(copy.deepcopy(doc)) != doc

    answers = {
        "deny rule": denied,
        "allow rule": allowed,
        "meter when": counted,
        "response_value": measured,
        "filter retain": retained,
        "filter destroy": destroyed,
    }
    assert answers == dict.fromkeys(answers, selects)


def test_rule_values_see_numbers_as_written():
    """A rule's `value` regex reads a number with a fraction as the body spells it
    (so `^1\\.50$` matches 1.50), the text filters write back."""
    config = _config("$.amount")
    config["proxies"][1]["rules"][0]["body"][0]["value"] = r"^1\.50$"
    snap = snapshot_from(config)
    headers = (("x-rr-authorization", "key-allows"), ("content-type", "application/json"))
    for body, allowed in (('{"amount": 1.50}', True), ('{"amount": 1.5}', False)):
        facts = RequestFacts("POST", "https", "api.example.com", 443, "/v1/x", headers, (), body.encode())
        assert decide(snap, facts, 0.0).decision.allowed is allowed, body
