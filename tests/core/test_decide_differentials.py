"""Parsing differentials closed in the core (docs/security.md): what rr decides on is
what any upstream framework would read. Exact decisions and reasons."""

import json

import pytest

from rr_addon.core import reasons
from rr_addon.core.decide import Limits, admit, decide
from rr_addon.core.types import Decision, RequestFacts
from rr_addon.testing.snapshots import snapshot_from

CONFIG = {
    "targets": [
        {
            "name": "api",
            "hosts": ["api.test"],
            "rules": [
                {"name": "no-deletes", "effect": "deny", "methods": ["DELETE"]},
                {"name": "no-stream", "effect": "deny", "body": [{"json_path": "$.stream", "value": "^true$"}]},
            ],
            "credentials": [{"name": "k", "kind": "api_key", "header": "X-Api-Key", "secret": "upstream-secret"}],
        },
        {"name": "matrix", "hosts": ["matrix.test"], "allow_path_parameters": True, "caller_headers": ["x-caller-key"]},
        {
            "name": "registry",
            "hosts": ["registry.test"],
            "allow_encoded_slashes": True,
            "rules": [{"name": "no-internal-scope", "effect": "deny", "path": "^/@internal%2F"}],
        },
    ],
    "proxies": [
        {
            "name": "agent",
            "targets": [{"target": "api"}, {"target": "matrix"}, {"target": "registry"}],
            "credentials": [
                {"name": "open", "auth": "api_key", "secret": "rr-open"},
                {
                    "name": "strict",
                    "auth": "api_key",
                    "secret": "rr-strict",
                    "default_effect": "deny",
                    "rules": [
                        {"name": "small-pages", "effect": "allow", "methods": ["GET"], "query": [{"name": "^limit$", "value": "^[0-9]{1,3}$"}]},
                        {"name": "mini", "effect": "allow", "methods": ["POST"], "body": [{"json_path": "$.model", "value": "^gpt-4o-mini$"}]},
                    ],
                },
                {"name": "basic", "auth": "basic", "username": "u", "secret": "rr-basic"},
            ],
        },
        {"name": "other", "targets": [{"target": "api"}], "credentials": [{"name": "o", "auth": "api_key", "secret": "rr-other"}]},
    ],
}
SNAP = snapshot_from(CONFIG)


def facts(method="GET", path="/v1/x", key="rr-open", host="api.test", headers=(), body=None, ctype=None, tunnel=None):
    hs = [] if tunnel else [("x-rr-authorization", key)]
    hs += [(k.lower(), v) for k, v in headers]
    if ctype is not None:
        hs.append(("content-type", ctype))
    raw = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    return RequestFacts(method, "https", host, 443, path, tuple(hs), (f"Bearer {key}",) if tunnel else (), raw)


def invalid(reason):
    return Decision.deny("invalid-request", reason)


ALLOWED = Decision.allow(reasons.ALLOWED)
CASE_KEYS = reasons.BODY_JSON_KEYS_DIFFER_IN_CASE
FORM = "application/x-www-form-urlencoded"
STRICT_DEFAULT = Decision.deny("access-denied", reasons.DEFAULT_DENIES, scope="proxy-credential")
NO_STREAM = Decision.deny("access-denied", reasons.DENIED_BY_RULE, scope="target", rule="no-stream")

CASES = [
    # a. repeated query parameters: an allow rule holds for every occurrence
    ("query-one", facts(path="/v1/x?limit=5", key="rr-strict"), ALLOWED),
    ("query-dup-all-small", facts(path="/v1/x?limit=5&limit=6", key="rr-strict"), ALLOWED),
    ("query-dup-one-large", facts(path="/v1/x?limit=5&limit=500000", key="rr-strict"), STRICT_DEFAULT),
    ("query-dup-encoded-name", facts(path="/v1/x?limit=5&l%69mit=500000", key="rr-strict"), STRICT_DEFAULT),
    # b. method overrides are refused, whatever their value
    ("override-header", facts("POST", headers=[("X-HTTP-Method-Override", "DELETE")]), invalid(reasons.METHOD_OVERRIDE)),
    ("override-x-http-method", facts("POST", headers=[("X-HTTP-Method", "DELETE")]), invalid(reasons.METHOD_OVERRIDE)),
    ("override-x-method-override", facts("POST", headers=[("X-Method-Override", "delete")]), invalid(reasons.METHOD_OVERRIDE)),
    ("override-underscores", facts("POST", headers=[("X_HTTP_Method_Override", "DELETE")]), invalid(reasons.METHOD_OVERRIDE)),
    ("override-same-method", facts("POST", headers=[("X-HTTP-Method-Override", "POST")]), invalid(reasons.METHOD_OVERRIDE)),
    ("path-override-original-url", facts("GET", headers=[("X-Original-URL", "/admin")]), invalid(reasons.PATH_OVERRIDE)),
    ("path-override-rewrite-url", facts("GET", headers=[("X-Rewrite-URL", "/admin")]), invalid(reasons.PATH_OVERRIDE)),
    ("path-override-underscores", facts("GET", headers=[("X_Original_URL", "/admin")]), invalid(reasons.PATH_OVERRIDE)),
    ("override-query", facts("POST", path="/v1/x?_method=DELETE"), invalid(reasons.METHOD_OVERRIDE)),
    ("override-query-encoded", facts("POST", path="/v1/x?a=1&%5Fmethod=DELETE"), invalid(reasons.METHOD_OVERRIDE)),
    ("override-query-lookalike", facts("POST", path="/v1/x?method=DELETE&my_method=x"), ALLOWED),
    ("delete-itself-denied", facts("DELETE"), Decision.deny("access-denied", reasons.DENIED_BY_RULE, scope="target", rule="no-deletes")),
    # c. ';' path parameters: refused unless the target opts in
    ("params-raw", facts(path="/v1/customers;x/cus_1"), invalid(reasons.PATH_PARAMETERS)),
    ("params-encoded", facts(path="/v1/customers%3bx/cus_1"), invalid(reasons.PATH_PARAMETERS)),
    ("params-last-segment", facts(path="/v1/cus_1;jsessionid=1?a=b"), invalid(reasons.PATH_PARAMETERS)),
    ("params-in-query-fine", facts(path="/v1/x?a=1;2"), ALLOWED),
    ("params-target-opts-in", facts(path="/v1/customers;x/cus_1", host="matrix.test"), ALLOWED),
    ("params-dot-segment-still-refused", facts(path="/v1/..;/admin", host="matrix.test"), invalid("dot segment with parameters in path")),
    # c'. encoded slashes: refused (with a hint) unless the target opts in; rules see `%2F` upper-case, within the segment
    ("slash-refused", facts(path="/@scope%2fname"), Decision.deny("invalid-request", reasons.PATH_ENCODED_SEPARATOR, detail=reasons.ENCODED_SLASH_HINT)),
    ("slash-target-opts-in", facts(path="/@scope%2fname", host="registry.test"), ALLOWED),
    ("slash-rule-sees-canonical", facts(path="/@internal%2fsecret-pkg", host="registry.test"), Decision.deny("access-denied", reasons.DENIED_BY_RULE, scope="target", rule="no-internal-scope")),
    ("slash-is-no-separator", facts(path="/@internal/secret-pkg", host="registry.test"), ALLOWED),
    ("slash-dot-segment", facts(path="/@x%2F..%2F@internal%2Fpkg", host="registry.test"), invalid(reasons.PATH_ENCODED_SLASH_DOT_SEGMENT)),
    ("backslash-still-refused", facts(path="/@x%5cy", host="registry.test"), invalid(reasons.PATH_ENCODED_SEPARATOR)),
    # d. json_path rules read the body as JSON whatever its content type
    ("json-as-text-plain", facts("POST", body={"stream": True}, ctype="text/plain"), NO_STREAM),
    ("json-no-content-type", facts("POST", body={"stream": True}), NO_STREAM),
    ("json-declared", facts("POST", body={"stream": True}, ctype="application/json"), NO_STREAM),
    ("json-declared-not-json", facts("POST", body=b"{nope", ctype="application/json"), invalid(reasons.BODY_NOT_JSON)),
    ("opaque-deny-does-not-match", facts("POST", body=b"\x00\x01binary", ctype="application/octet-stream"), ALLOWED),
    ("opaque-allow-does-not-hold", facts("POST", key="rr-strict", body=b"model: gpt-4o-mini", ctype="text/plain"), STRICT_DEFAULT),
    ("allow-json-as-text", facts("POST", key="rr-strict", body={"model": "gpt-4o-mini"}, ctype="text/plain"), ALLOWED),
    ("form-body", facts("POST", key="rr-strict", body=b"model=gpt-4o-mini", ctype="application/x-www-form-urlencoded"), ALLOWED),
    ("form-dup-field", facts("POST", key="rr-strict", body=b"model=gpt-4o-mini&model=gpt-4o", ctype="application/x-www-form-urlencoded"), STRICT_DEFAULT),
    ("form-that-is-json", facts("POST", body=b'{"stream": true}', ctype="application/x-www-form-urlencoded"), invalid(reasons.BODY_FORM_AND_JSON)),
    ("json-repeated-key", facts("POST", body=b'{"stream": false, "stream": true}', ctype="application/json"), invalid(reasons.BODY_JSON_REPEATED_KEY)),
    ("json-repeated-key-nested", facts("POST", body=b'{"a": [{"x": 1, "x": 1}]}', ctype="text/plain"), invalid(reasons.BODY_JSON_REPEATED_KEY)),
    ("json-same-key-other-objects", facts("POST", body=b'{"a": {"x": 1}, "b": {"x": 2}}', ctype="application/json"), ALLOWED),
    ("form-scalar-json-is-a-form", facts("POST", key="rr-strict", body=b"123", ctype="application/x-www-form-urlencoded"), STRICT_DEFAULT),
    # d'. keys that differ only in case are repeated keys (Go's encoding/json matches them to one field)
    ("json-keys-differ-in-case", facts("POST", body=b'{"stream": false, "Stream": true}', ctype="application/json"), invalid(CASE_KEYS)),
    ("json-keys-upper-case", facts("POST", body=b'{"stream": false, "STREAM": true}', ctype="application/json"), invalid(CASE_KEYS)),
    ("json-keys-case-nested", facts("POST", body=b'{"a": [{"id": 1, "Id": 2}]}', ctype="text/plain"), invalid(CASE_KEYS)),
    ("json-keys-kelvin-sign", facts("POST", body=b'{"k": 1, "\\u212a": 2}', ctype="application/json"), invalid(CASE_KEYS)),
    ("json-keys-long-s-utf8", facts("POST", body='{"s": 1, "\u017f": 2}'.encode(), ctype="application/json"), invalid(CASE_KEYS)),
    ("json-keys-sharp-s-casefold", facts("POST", body='{"stra\u00dfe": 1, "STRASSE": 2}'.encode(), ctype="application/json"), invalid(CASE_KEYS)),
    ("json-exact-repeat-reported-first", facts("POST", body=b'{"a": 1, "A": 2, "a": 3}', ctype="application/json"), invalid(reasons.BODY_JSON_REPEATED_KEY)),
    ("json-case-other-objects", facts("POST", body=b'{"a": {"x": 1}, "b": {"X": 2}}', ctype="application/json"), ALLOWED),
    ("json-keys-differ-more", facts("POST", body=b'{"stream": false, "streams": true, "Strea": 1}', ctype="application/json"), ALLOWED),
    # b'. a `_method` field in a form body is an override too, read whatever the rules need
    ("form-override", facts("POST", body=b"_method=DELETE", ctype=FORM), invalid(reasons.METHOD_OVERRIDE)),
    ("form-override-among-fields", facts("POST", body=b"name=x&_method=PUT&b=2", ctype=FORM + "; charset=utf-8"), invalid(reasons.METHOD_OVERRIDE)),
    ("form-override-encoded", facts("POST", body=b"a=1&%5Fmethod=DELETE", ctype=FORM), invalid(reasons.METHOD_OVERRIDE)),
    ("form-override-php-dot", facts("POST", body=b".method=DELETE", ctype=FORM), invalid(reasons.METHOD_OVERRIDE)),
    ("form-override-php-space", facts("POST", body=b"+.method=DELETE", ctype=FORM), invalid(reasons.METHOD_OVERRIDE)),
    ("form-override-php-leading-space", facts("POST", body=b"%20_method=DELETE", ctype=FORM), invalid(reasons.METHOD_OVERRIDE)),
    ("form-override-array", facts("POST", body=b"_method[]=DELETE", ctype=FORM), invalid(reasons.METHOD_OVERRIDE)),
    ("form-override-no-content-type", facts("POST", body=b"_method=DELETE"), invalid(reasons.METHOD_OVERRIDE)),
    ("form-override-second-content-type", facts("POST", body=b"_method=DELETE", headers=[("Content-Type", "text/plain")], ctype=FORM), invalid(reasons.METHOD_OVERRIDE)),
    ("form-override-no-body-rules", facts("POST", host="matrix.test", body=b"_method=DELETE", ctype=FORM), invalid(reasons.METHOD_OVERRIDE)),
    ("form-override-not-latin", facts("POST", host="matrix.test", body="n=\u00e9\u20ac&_method=DELETE".encode(), ctype=FORM), invalid(reasons.METHOD_OVERRIDE)),
    ("form-lookalikes", facts("POST", body=b"method=DELETE&+method=x&my_method=x&_methods=x&note=_method%3DDELETE", ctype=FORM), ALLOWED),
    ("text-plain-is-no-form", facts("POST", host="matrix.test", body=b"_method=DELETE", ctype="text/plain"), ALLOWED),
    ("put-without-content-type-is-no-form", facts("PUT", host="matrix.test", body=b"_method=DELETE"), ALLOWED),
    ("query-override-php-dot", facts("POST", path="/v1/x?.method=DELETE"), invalid(reasons.METHOD_OVERRIDE)),
    ("query-override-array", facts("POST", path="/v1/x?_method%5B%5D=DELETE"), invalid(reasons.METHOD_OVERRIDE)),
]


@pytest.mark.parametrize("f, decision", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_differentials(f, decision):
    assert decide(SNAP, f, 0).decision == decision


@pytest.mark.parametrize(
    "f, reads",
    [
        (facts("POST", host="matrix.test", body=b"a=1", ctype=FORM), True),
        (facts("PUT", host="matrix.test", body=b"a=1", ctype=FORM.upper()), True),
        (facts("POST", host="matrix.test", body=b"a=1"), True),  # Rack: a POST without a media type is a form
        (facts("POST", host="matrix.test", body=b"a=1", ctype=""), True),
        (facts("POST", host="matrix.test", body=b"{}", ctype="application/json"), False),
        (facts("POST", host="matrix.test", body=b"\x00", ctype="application/octet-stream"), False),
        (facts("POST", host="matrix.test", body=b"--b--", ctype="multipart/form-data; boundary=b"), False),
        (facts("PUT", host="matrix.test", body=b"\x00"), False),
        (facts("GET", host="matrix.test"), False),
    ],
    ids=["form", "form-put-upper-case", "post-no-type", "post-empty-type", "json", "binary", "multipart", "put-no-type", "get"],
)
def test_only_form_bodies_are_read_for_an_override(f, reads):
    """A target without body rules reads only form bodies; every other body may stream."""
    admitted = admit(SNAP, f, 0)
    assert (admitted.reads_form, admitted.needs_body) == (reads, reads)


def test_a_form_over_the_inspection_limit_is_refused():
    big = facts("POST", host="matrix.test", body=b"a=" + b"x" * 2000, ctype=FORM)
    out = decide(SNAP, big, 0, Limits(inspect_bytes=1000))
    assert out.decision == Decision.deny("payload-too-large", reasons.FORM_OVER_INSPECTION_LIMIT, detail="2002 > 1000 bytes")
    # where body rules read it too, theirs is the reason
    out = decide(SNAP, facts("POST", body=b"a=" + b"x" * 2000, ctype=FORM), 0, Limits(inspect_bytes=1000))
    assert out.decision == Decision.deny("payload-too-large", reasons.BODY_OVER_INSPECTION_LIMIT, detail="2002 > 1000 bytes")


RR_OWN = {"proxy-authorization", "x-rr-authorization"}

STRIP = [
    # e. every header carrying an rr credential is removed, whichever channel authenticated
    ("tunnel-and-key-in-authorization", facts(tunnel=True, headers=[("Authorization", "Bearer rr-open")]), RR_OWN | {"authorization"}),
    ("tunnel-and-raw-key", facts(tunnel=True, headers=[("Authorization", "rr-open")]), RR_OWN | {"authorization"}),
    ("tunnel-and-basic-key", facts(tunnel=True, headers=[("Authorization", "Basic dTpyci1iYXNpYw==")]), RR_OWN | {"authorization"}),
    ("tunnel-and-another-callers-key", facts(tunnel=True, headers=[("Authorization", "Bearer rr-other")]), RR_OWN | {"authorization"}),
    ("tunnel-and-own-upstream-token", facts(tunnel=True, headers=[("Authorization", "Bearer not-an-rr-key")]), RR_OWN),
    ("x-rr-and-key-in-authorization", facts(headers=[("Authorization", "Bearer rr-strict")]), RR_OWN | {"authorization"}),
    ("caller-header-too", facts(host="matrix.test", tunnel=True, headers=[("X-Caller-Key", "rr-open")]), RR_OWN | {"x-caller-key"}),
    ("caller-header-of-other-host-kept", facts(tunnel=True, headers=[("X-Caller-Key", "rr-open")]), RR_OWN),
]


@pytest.mark.parametrize("f, strip", [c[1:] for c in STRIP], ids=[c[0] for c in STRIP])
def test_every_header_with_an_rr_credential_is_stripped(f, strip):
    out = decide(SNAP, f, 0)
    assert out.decision.allowed, out.decision
    assert out.strip_headers == strip
