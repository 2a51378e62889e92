import copy

import pytest
from pydantic import ValidationError

from rr_addon.policy.filters_schema import FilterEntry
from rr_addon.policy.bodies import dump_json, parse_json
from rr_addon.policy.filters import SCOPE_ORDER, Filter, apply_filters, compile_filter, compile_filters, stack
from rr_addon.policy.jsonpaths import JsonPathError

RESPONSE = {
    "object": "list",
    "data": [
        {"id": "cus_1", "email": "a@example.com", "card": {"last4": "4242", "number": "4242424242424242"}},
        {"id": "cus_2", "email": "b@example.com", "card": {"last4": "1111", "number": "4111111111111111"}},
    ],
    "has_more": False,
}


def apply(entries, doc=RESPONSE):
    filters = compile_filters([FilterEntry.model_validate(e) for e in entries])
    return apply_filters(copy.deepcopy(doc), filters)


@pytest.mark.parametrize(
    "entries, expected",
    [
        pytest.param(
            [{"destroy": ["$.data[*].card"]}, {"retain": ["$.data[*].id", "$.object"]}],
            {"object": "list", "data": [{"id": "cus_1"}, {"id": "cus_2"}]},
            id="contract-example",
        ),
        pytest.param(
            [{"retain": ["$.data[*]"]}, {"destroy": ["$.data[*].card.number"]}],
            {"data": [{"id": "cus_1", "email": "a@example.com", "card": {"last4": "4242"}}, {"id": "cus_2", "email": "b@example.com", "card": {"last4": "1111"}}]},
            id="retain-then-destroy-inside",
        ),
        pytest.param(
            [{"retain": ["$.data[*].card"], "destroy": ["$.data[*].card.number"]}],
            {"data": [{"card": {"last4": "4242"}}, {"card": {"last4": "1111"}}]},
            id="one-entry-retains-then-destroys",
        ),
        pytest.param(
            [{"retain": ["$.data[*].card"], "destroy": ["$.data[*].card"]}],
            {"data": [{}, {}]},
            id="overlap-destroy-wins",
        ),
        pytest.param(
            [{"destroy": ["$.data[*].card"]}, {"retain": ["$.data[*].card"]}],
            {},
            id="retain-after-destroy-finds-nothing",
        ),
        pytest.param(
            [{"retain": ["$..last4"]}],
            {"data": [{"card": {"last4": "4242"}}, {"card": {"last4": "1111"}}]},
            id="retain-recursive",
        ),
        pytest.param(
            [{"destroy": ["$.data[0]"]}, {"destroy": ["$.data[0]"]}],
            {"object": "list", "data": [], "has_more": False},
            id="entries-run-on-previous-output",
        ),
        pytest.param(
            [{"destroy": ["$.data[?(@.card.last4 == '4242')]"]}],
            {"object": "list", "data": [RESPONSE["data"][1]], "has_more": False},
            id="filter-expression",
        ),
        pytest.param([{"destroy": ["$.nothing"]}], RESPONSE, id="no-match-is-no-change"),
    ],
)
def test_entries(entries, expected):
    assert apply(entries) == expected


def test_stack_order():
    assert SCOPE_ORDER == ("target_credential", "target", "proxy_credential", "proxy")
    f = [compile_filter(None, [f"$.{name}"]) for name in ("tc", "t", "pc", "p")]
    assert stack(proxy=[f[3]], target=[f[1]], proxy_credential=[f[2]], target_credential=[f[0]]) == tuple(f)
    assert stack() == ()


def test_stacked_scopes_each_see_the_previous_output():
    # the target credential keeps only data, then the proxy drops the first element:
    # applied in the other order, the proxy's destroy would have hit a different element
    keep_data = compile_filter(["$.data"], None)
    drop_first = compile_filter(None, ["$.data[0]"])
    out = apply_filters(copy.deepcopy(RESPONSE), stack([keep_data], [], [], [drop_first]))
    assert out == {"data": [RESPONSE["data"][1]]}
    keep_second = compile_filter(["$.data[1]"], None)
    assert apply_filters(copy.deepcopy(RESPONSE), stack([keep_second], [drop_first], [], [])) == {"data": []}
    assert apply_filters(copy.deepcopy(RESPONSE), stack([drop_first], [keep_second], [], [])) == {}


def test_numbers_stay_exact_through_filters():
    doc = parse_json('{"data": [{"amount": 1e400, "fee": 0.10, "id": 123456789012345678901234567890}], "x": 1}')
    out = apply_filters(doc, [compile_filter(["$.data"], ["$.data[*].fee"])])
    assert dump_json(out) == b'{"data":[{"amount":1e400,"id":123456789012345678901234567890}]}'


def test_filter_value():
    f = compile_filter(["$.a"], ["$.a.b"])
    assert [p.text for p in f.retain] == ["$.a"] and [p.text for p in f.destroy] == ["$.a.b"]
    assert f.apply({"a": {"b": 1, "c": 2}, "d": 3}) == {"a": {"c": 2}}
    assert Filter().apply({"a": 1}) == {"a": 1}


@pytest.mark.parametrize(
    "retain, destroy, message",
    [
        pytest.param(None, None, "needs 'retain' or 'destroy'", id="nothing"),
        pytest.param([], [], "needs 'retain' or 'destroy'", id="empty-lists"),
        pytest.param(None, ["$"], "would remove the whole response", id="destroy-root"),
        pytest.param(["$.["], None, "not a valid JSONPath", id="bad-path"),
    ],
)
def test_compile_filter_errors(retain, destroy, message):
    with pytest.raises(JsonPathError, match=message):
        compile_filter(retain, destroy)


@pytest.mark.parametrize(
    "entry, loc, message",
    [
        pytest.param({}, (), "needs 'retain' or 'destroy'", id="empty-entry"),
        pytest.param({"retain": []}, ("retain",), "at least 1 item", id="empty-retain"),
        pytest.param({"destroy": ["$"]}, (), "whole response", id="destroy-root"),
        pytest.param({"retain": ["$.a", "$..["]}, ("retain", 1), "not a valid JSONPath", id="bad-second-path"),
        pytest.param({"retain": ["$.a.`len`"]}, ("retain", 0), "computes a value", id="computed"),
        pytest.param({"retain": ["$.a[?(@.x == y)]"]}, ("retain", 0), "deprecated", id="deprecated"),
        pytest.param({"keep": ["$.a"]}, ("keep",), "Extra inputs", id="unknown-field"),
    ],
)
def test_schema_errors(entry, loc, message):
    with pytest.raises(ValidationError) as e:
        FilterEntry.model_validate(entry)
    (error,) = e.value.errors()
    assert tuple(error["loc"]) == loc
    assert message in error["msg"]


def test_schema_accepts():
    entry = FilterEntry.model_validate({"retain": ["$.data[*].id"], "destroy": ["$..card"], "description": "ids only"})
    assert entry.retain == ["$.data[*].id"] and entry.destroy == ["$..card"]
