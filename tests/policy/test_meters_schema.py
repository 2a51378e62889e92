import pytest
from pydantic import TypeAdapter, ValidationError

from rr_addon.policy.meters_schema import HeaderValue, JsonPathValue, MeterList, MeterSpec


def test_defaults():
    m = MeterSpec.model_validate({"name": "requests"})
    assert (m.type, m.per, m.timezone, m.on_backend_error, m.when) == ("request_count", "proxy", "UTC", "deny", None)
    assert m.limits.by_kind() == (None, None, None, None)
    assert MeterSpec.model_validate({"name": "r", "limits": None}).limits == m.limits  # a bare `limits:` in YAML


@pytest.mark.parametrize(
    "data",
    [
        {"name": "t", "type": "response_value", "response_value": {"json_path": "$.usage.total_tokens"}},
        {"name": "t", "type": {"response_value": {"json_path": "$.usage.total_tokens"}}},
        {"name": "t", "response_value": {"json_path": "$.usage.total_tokens"}},
    ],
    ids=["explicit", "nested", "implied"],
)
def test_response_value_forms_normalise(data):
    m = MeterSpec.model_validate(data)
    assert m.type == "response_value" and m.response_value == JsonPathValue(json_path="$.usage.total_tokens")


def test_full_spec():
    m = MeterSpec.model_validate(
        {
            "name": "tokens",
            "type": "response_value",
            "response_value": {"header": "X-Tokens-Used"},
            "limits": {"minute": 0, "month": 200000},
            "per": "credential",
            "when": {"methods": ["POST"], "path": "^/v1/chat/"},
            "timezone": "Europe/Berlin",
            "on_backend_error": "allow",
        }
    )
    assert m.response_value == HeaderValue(header="x-tokens-used")
    assert m.limits.by_kind() == (0, None, None, 200000)
    assert m.when.methods == ["POST"] and m.when.path.pattern == "^/v1/chat/"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"name": "r", "limits": {"week": 5}}, "week"),
        ({"name": "r", "limits": {"minute": -1}}, "greater than or equal to 0"),
        ({"name": "r", "limits": {"minute": "many"}}, "valid decimal"),
        ({"name": "r", "timezone": "Mars/Olympus"}, "unknown timezone 'Mars/Olympus'"),
        ({"name": "r", "per": "team"}, "'proxy' or 'credential'"),
        ({"name": "r", "on_backend_error": "ignore"}, "'deny' or 'allow'"),
        ({"name": "r", "type": "bytes"}, "'request_count', 'response_value' or 'cost'"),
        ({"name": "r", "type": "response_value"}, "needs response_value"),
        ({"name": "r", "type": "request_count", "response_value": {"header": "x"}}, "only for type: response_value"),
        ({"name": "r", "type": {"other": {}}}, "type is request_count, response_value, cost, or"),
        ({"name": "t", "response_value": {"json_path": "$.a[", "header": "x"}}, "response_value"),
        ({"name": "t", "response_value": {"json_path": "$.a[?(@.b =="}}, "not a valid JSONPath"),
        ({"name": "t", "response_value": {"json_path": "$.a.`len`"}}, "computes a value"),
        ({"name": "t", "response_value": {"header": "bad header"}}, "not a valid HTTP header name"),
        ({"name": "bad name"}, "letters, digits"),
        ({"name": "r", "limit": {"minute": 1}}, "Extra inputs are not permitted"),
    ],
)
def test_invalid(data, message):
    with pytest.raises(ValidationError, match=message):
        MeterSpec.model_validate(data)


def test_meter_names_are_unique_within_a_proxy():
    adapter = TypeAdapter(MeterList)
    assert [m.name for m in adapter.validate_python([{"name": "a"}, {"name": "b"}])] == ["a", "b"]
    with pytest.raises(ValidationError, match="duplicate meter name 'a'"):
        adapter.validate_python([{"name": "a"}, {"name": "a", "per": "credential"}])
