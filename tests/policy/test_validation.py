import gzip

import pytest
from pydantic import ValidationError

from rr_addon.policy.filters_schema import ValidateEntry
from rr_addon.core.types import STATUS
from rr_addon.policy.validation import RequestBody, Violation, compile_checks, compile_schema, validate
from rr_addon.core import reasons

JSON = "application/json"
CHARGE_SCHEMA = {
    "type": "object",
    "required": ["amount", "currency"],
    "properties": {
        "amount": {"type": "integer", "minimum": 1},
        "currency": {"enum": ["usd", "eur"]},
        "fee": {"type": "number", "multipleOf": 0.01},
        "items": {"type": "array", "items": {"type": "object", "required": ["sku"]}},
        "a/b": {"type": "string"},
    },
}
ENTRIES = [
    {"max_body_bytes": 200, "content_types": [JSON, "text/*"]},
    {"methods": ["POST"], "path": "^/v1/charges$", "json_schema": CHARGE_SCHEMA},
]
CHECKS = compile_checks([ValidateEntry.model_validate(e) for e in ENTRIES])


def req(body=b"", content_type=JSON, method="POST", path="/v1/charges", encoding=None):
    return RequestBody(method=method, path=path, content_type=content_type, content_encoding=encoding, body=body)


def test_reasons_are_fixed_sentences():
    assert reasons.VALIDATION_BODY_TOO_LARGE == "request body exceeds the size limit"
    assert reasons.VALIDATION_CONTENT_TYPE_NOT_ALLOWED == "request content type not allowed"
    assert reasons.VALIDATION_ENCODING_NOT_SUPPORTED == "request content encoding not supported"
    assert reasons.VALIDATION_JSON_REQUIRED == "request body must be JSON"
    assert reasons.VALIDATION_BODY_NOT_JSON == "request body is not valid JSON"
    assert reasons.VALIDATION_SCHEMA_MISMATCH == "request body does not match the JSON schema"


@pytest.mark.parametrize(
    "request_, expected",
    [
        pytest.param(req(b'{"amount": 100, "currency": "usd"}'), None, id="valid"),
        pytest.param(req(b'{"amount": 100.0, "currency": "usd"}'), None, id="integer-written-as-1.0"),
        pytest.param(req(b'{"amount": 1, "currency": "eur", "fee": 0.07}'), None, id="exact-multipleOf"),
        pytest.param(req(b"", method="GET"), None, id="get-without-body-not-covered-by-schema"),
        pytest.param(req(b"x" * 500, method="GET", content_type="text/plain"), Violation("payload-too-large", reasons.VALIDATION_BODY_TOO_LARGE, "500 bytes; the limit is 200"), id="too-large"),
        pytest.param(req(b"x" * 200, method="PUT", content_type="text/plain"), None, id="exactly-the-limit"),
        pytest.param(req(b"a=1", content_type="application/x-www-form-urlencoded", method="PUT"), Violation("unsupported-media-type", reasons.VALIDATION_CONTENT_TYPE_NOT_ALLOWED, "application/x-www-form-urlencoded is not one of application/json, text/*"), id="type-not-allowed"),
        pytest.param(req(b"hi", content_type="text/plain; charset=utf-8", method="PUT"), None, id="wildcard-subtype-with-params"),
        pytest.param(req(b"hi", content_type=None, method="PUT"), Violation("unsupported-media-type", reasons.VALIDATION_CONTENT_TYPE_NOT_ALLOWED, "no content type is not one of application/json, text/*"), id="body-without-type"),
        pytest.param(req(b"", content_type=None, method="GET", path="/v1/other"), None, id="no-body-no-type"),
        pytest.param(req(b'{"currency": "usd"}'), Violation("invalid-request", reasons.VALIDATION_SCHEMA_MISMATCH, "/amount: 'amount' is a required property"), id="missing-member"),
        pytest.param(req(b'{"amount": "100", "currency": "usd"}'), Violation("invalid-request", reasons.VALIDATION_SCHEMA_MISMATCH, "/amount: value is not of type 'integer'"), id="wrong-type"),
        pytest.param(req(b'{"amount": 0, "currency": "usd"}'), Violation("invalid-request", reasons.VALIDATION_SCHEMA_MISMATCH, "/amount: value is less than the minimum of 1"), id="minimum"),
        pytest.param(req(b'{"amount": 1, "currency": "usd", "fee": 0.001}'), Violation("invalid-request", reasons.VALIDATION_SCHEMA_MISMATCH, "/fee: value is not a multiple of 0.01"), id="multipleOf"),
        pytest.param(req(b'{"amount": 1, "currency": "usd", "items": [{"sku": 1}, {}]}'), Violation("invalid-request", reasons.VALIDATION_SCHEMA_MISMATCH, "/items/1/sku: 'sku' is a required property"), id="nested-pointer"),
        pytest.param(req(b'{"amount": 1, "currency": "usd", "a/b": 5}'), Violation("invalid-request", reasons.VALIDATION_SCHEMA_MISMATCH, "/a~1b: value is not of type 'string'"), id="pointer-escaping"),
        pytest.param(req(b"[1, 2]"), Violation("invalid-request", reasons.VALIDATION_SCHEMA_MISMATCH, "(root): value is not of type 'object'"), id="root-pointer"),
        pytest.param(req(b'{"amount": 1,'), Violation("invalid-request", reasons.VALIDATION_BODY_NOT_JSON, "malformed JSON: Expecting property name enclosed in double quotes at line 1 column 14"), id="malformed"),
        pytest.param(req(b""), Violation("invalid-request", reasons.VALIDATION_BODY_NOT_JSON, "the body is empty"), id="empty-body"),
        pytest.param(req(b"amount=1", content_type="text/plain"), Violation("unsupported-media-type", reasons.VALIDATION_JSON_REQUIRED, "text/plain is not JSON"), id="schema-needs-json"),
        pytest.param(req(b'{"amount": 1e400, "currency": "usd", "fee": 1e400}'), Violation("invalid-request", reasons.VALIDATION_SCHEMA_MISMATCH, "a value is out of the range the schema can check"), id="number-beyond-decimal-context"),
        pytest.param(req(b"[" * 100 + b"]" * 100), Violation("invalid-request", reasons.VALIDATION_BODY_NOT_JSON, "JSON nested deeper than 64 levels"), id="too-deep-for-schema"),
    ],
)
def test_validate(request_, expected):
    assert validate(CHECKS, request_) == expected


@pytest.mark.parametrize(
    "encoding, body, expected",
    [
        pytest.param("gzip", gzip.compress(b'{"amount": 5, "currency": "usd"}'), None, id="gzip-valid"),
        pytest.param("gzip", gzip.compress(b'{"currency": "usd"}'), "/amount: 'amount' is a required property", id="gzip-invalid"),
        pytest.param("gzip", gzip.compress(b"{" + b" " * 5000 + b"}"), "decoded body exceeds 200 bytes", id="gzip-bomb"),
        pytest.param("compress", b"xx", "unsupported content-encoding 'compress'", id="unknown-encoding"),
        pytest.param("gzip", b"not gzip", "corrupt compressed body: Error -3 while decompressing data: incorrect header check", id="corrupt"),
    ],
)
def test_encoded_bodies(encoding, body, expected):
    result = validate(CHECKS, req(body, encoding=encoding))
    assert (result.detail if result else None) == expected


def test_methods_and_path_select_entries():
    assert validate(CHECKS, req(b'{"x": 1}', method="PUT")) is None
    assert validate(CHECKS, req(b'{"x": 1}', path="/v1/charges/ch_1")) is None
    assert validate(CHECKS, req(b'{"x": 1}', method="post")).reason == reasons.VALIDATION_SCHEMA_MISMATCH


def test_smallest_limit_applies_and_size_is_checked_first():
    checks = compile_checks([ValidateEntry(max_body_bytes=10), ValidateEntry(max_body_bytes=5, content_types=["application/json"])])
    result = validate(checks, req(b"123456", content_type="text/plain"))
    assert result == Violation("payload-too-large", reasons.VALIDATION_BODY_TOO_LARGE, "6 bytes; the limit is 5")


def test_values_stay_out_of_the_detail():
    checks = compile_checks([ValidateEntry(json_schema={"properties": {"prompt": {"maxLength": 3}, "n": {"enum": [1]}}})])
    for body in (b'{"prompt": "my ssn is 536-22-1234"}', b'{"n": "536-22-1234"}'):
        result = validate(checks, req(body))
        assert result.reason == reasons.VALIDATION_SCHEMA_MISMATCH and "536" not in result.detail


def test_violation_maps_to_a_decision():
    from rr_addon.core.decide import violation_decision

    d = violation_decision(Violation("payload-too-large", reasons.VALIDATION_BODY_TOO_LARGE, "9 bytes"), scope="proxy")
    assert (d.allowed, d.status, d.code, d.reason, d.detail, d.scope) == (False, 413, "payload-too-large", reasons.VALIDATION_BODY_TOO_LARGE, "9 bytes", "proxy")
    for code in ("payload-too-large", "unsupported-media-type", "invalid-request"):
        assert violation_decision(Violation(code, "r")).status == STATUS[code]


def test_no_checks():
    assert validate((), req(b"anything")) is None


@pytest.mark.parametrize(
    "schema, message",
    [
        pytest.param({"type": "objekt"}, "invalid JSON Schema at /type", id="bad-type"),
        pytest.param({"required": "amount"}, "invalid JSON Schema at /required", id="bad-required"),
        pytest.param({"$ref": "https://example.com/schema.json"}, "only references inside the schema", id="remote-ref"),
        pytest.param({"properties": {"a": {"$ref": "other.json#/x"}}}, "only references inside the schema", id="relative-ref"),
    ],
)
def test_compile_schema_errors(schema, message):
    with pytest.raises(ValueError, match=message):
        compile_schema(schema)


def test_local_refs_work():
    checks = compile_checks([ValidateEntry(json_schema={"$defs": {"pos": {"minimum": 1}}, "properties": {"n": {"$ref": "#/$defs/pos"}}})])
    assert validate(checks, req(b'{"n": 1}')) is None
    assert validate(checks, req(b'{"n": 0}')).detail == "/n: value is less than the minimum of 1"


@pytest.mark.parametrize(
    "entry, loc, message",
    [
        pytest.param({}, (), "needs max_body_bytes, content_types or json_schema", id="no-check"),
        pytest.param({"methods": ["POST"], "path": "^/x"}, (), "needs max_body_bytes", id="selectors-only"),
        pytest.param({"max_body_bytes": 0}, ("max_body_bytes",), "greater than 0", id="zero-limit"),
        pytest.param({"max_body_bytes": "1MB"}, ("max_body_bytes",), "valid integer", id="string-limit"),
        pytest.param({"content_types": ["json"]}, ("content_types",), "is not a media type", id="bad-media-type"),
        pytest.param({"content_types": ["*/json"]}, ("content_types",), "only */* may", id="bad-wildcard"),
        pytest.param({"content_types": ["application/json; charset=utf-8"]}, ("content_types",), "is not a media type", id="params"),
        pytest.param({"content_types": []}, ("content_types",), "at least 1 item", id="empty-types"),
        pytest.param({"methods": ["GE T"], "max_body_bytes": 1}, ("methods",), "is not an HTTP method", id="bad-method"),
        pytest.param({"path": "(?=x)", "max_body_bytes": 1}, ("path",), "not a valid RE2 regex", id="bad-regex"),
        pytest.param({"path": "", "max_body_bytes": 1}, ("path",), "matches everything; omit the field", id="empty-regex"),
        pytest.param({"json_schema": {"type": 5}}, ("json_schema",), "invalid JSON Schema", id="bad-schema"),
        pytest.param({"max_body_bytes": 1, "size": 2}, ("size",), "Extra inputs", id="unknown-field"),
    ],
)
def test_schema_errors(entry, loc, message):
    with pytest.raises(ValidationError) as e:
        ValidateEntry.model_validate(entry)
    (error,) = e.value.errors()
    assert tuple(error["loc"]) == loc
    assert message in error["msg"]


def test_schema_normalises():
    e = ValidateEntry.model_validate({"methods": ["post"], "content_types": ["Application/JSON"], "json_schema": True})
    assert e.methods == ["POST"] and e.content_types == ["application/json"] and e.json_schema is True
