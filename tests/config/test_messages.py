"""Configuration errors a person can act on: valid fields with a did-you-mean,
the values of an enumeration, the expected shape — in the policy's words,
never the validation library's."""

from pathlib import Path

import pytest

from rr_addon.config.load import ConfigErrors, load_files


def errors_of(tmp_path: Path, text: str) -> list[str]:
    p = tmp_path / "policy.yaml"
    p.write_text(text)
    with pytest.raises(ConfigErrors) as e:
        load_files([p])
    return [str(err).replace(str(p), "F") for err in e.value.errors]


CASES = [
    (
        "limits-typo",
        "proxies:\n  - name: p\n    meters:\n      - name: m\n        limits: {min: 5}\n",
        ["F:5: proxies[p].meters[m].limits.min: unknown field 'min'; did you mean 'minute'? Valid fields: minute, hour, day, month"],
    ),
    (
        "limits-not-a-mapping",
        "proxies: [{name: p, meters: [{name: m, limits: [5]}]}]\n",
        ["F:1: proxies[p].meters[m].limits: expected a mapping with the fields minute, hour, day, month; got a list"],
    ),
    ("enum", "proxies: [{name: p, meters: [{name: m, per: user}]}]\n", ["F:1: proxies[p].meters[m].per: 'user' is not one of proxy, credential"]),
    ("enum-typo", "proxies: [{name: p, mode: reprot}]\n", ["F:1: proxies[p].mode: 'reprot' is not one of enforce, report; did you mean 'report'?"]),
    (
        "kind-typo",
        "targets:\n  - name: t\n    hosts: [a.test]\n    credentials:\n      - {name: c, kind: bearr}\n",
        ["F:5: targets[t].credentials[c].kind: kind 'bearr' is not one of api_key, bearer, basic, jwt, custom, none, oauth2_client_credentials, oauth2_refresh_token, oauth2_jwt_bearer; did you mean 'bearer'?"],
    ),
    (
        "kind-missing",
        "targets: [{name: t, hosts: [a.test], credentials: [{name: c}]}]\n",
        ["F:1: targets[t].credentials[c].kind: missing 'kind': one of api_key, bearer, basic, jwt, custom, none, oauth2_client_credentials, oauth2_refresh_token, oauth2_jwt_bearer"],
    ),
    (
        "auth-typo",
        "proxies: [{name: p, credentials: [{name: c, auth: apikey, secret: x}]}]\n",
        ["F:1: proxies[p].credentials[c].auth: auth 'apikey' is not one of api_key, bearer, jwt, basic, jwt_verify, oauth2; did you mean 'api_key'?"],
    ),
    (
        "credential-field-typo",
        "targets: [{name: t, hosts: [a.test], credentials: [{name: c, kind: bearer, secert: x}]}]\n",
        ["F:1: targets[t].credentials[c].secert: unknown field 'secert'; did you mean 'secret'? Valid fields: name, kind, secret, description, rules, default_effect, filters, redact"],
    ),
    (
        "rule-field-typo",
        "proxies: [{name: p, rules: [{name: r, effect: deny, method: [GET]}]}]\n",
        ["F:1: proxies[p].rules[r].method: unknown field 'method'; did you mean 'methods'? Valid fields: name, methods, path, headers, query, body, claims, mcp, ignore_case, effect, priority, description"],
    ),
    (
        "mcp-empty",
        "proxies: [{name: p, rules: [{name: r, effect: deny, mcp: {}}]}]\n",
        ["F:1: proxies[p].rules[r].mcp: an mcp condition needs 'method', 'tool' or 'arguments' (to match any JSON-RPC body, use method: \".\")"],
    ),
    (
        "mcp-field-typo",
        "proxies: [{name: p, rules: [{name: r, effect: deny, mcp: {tools: x}}]}]\n",
        ["F:1: proxies[p].rules[r].mcp.tools: unknown field 'tools'; did you mean 'tool'? Valid fields: method, tool, arguments"],
    ),
    (
        "one-of-two-shapes",  # response_value is {json_path} or {header}: one answer, not one per shape
        "proxies: [{name: p, meters: [{name: m, type: response_value, response_value: {jsonpath: x}}]}]\n",
        [
            "F:1: proxies[p].meters[m].response_value.json_path: required field missing",
            "F:1: proxies[p].meters[m].response_value.jsonpath: unknown field 'jsonpath'; did you mean 'json_path'? Valid fields: json_path (or header)",
        ],
    ),
    (
        "fits-no-shape",
        "proxies: [{name: p, meters: [{name: m, type: response_value, response_value: 7}]}]\n",
        ["F:1: proxies[p].meters[m].response_value: expected a mapping with the fields json_path or a mapping with the fields header; got 7"],
    ),
    (
        "detector",
        "proxies: [{name: p, redact: [{detectors: [emails]}]}]\n",
        ["F:1: proxies[p].redact[0].detectors[0]: 'emails' is not one of email, phone, credit_card, iban, us_ssn, ip_address, secret; did you mean 'email'?"],
    ),
    ("whole-number", "proxies: [{name: p, meters: [{name: m, limits: {minute: lots}}]}]\n", ["F:1: proxies[p].meters[m].limits.minute: expected a number; got the string 'lots'"]),
    ("bound", "proxies: [{name: p, meters: [{name: m, limits: {minute: -1}}]}]\n", ["F:1: proxies[p].meters[m].limits.minute: must be at least 0; got -1"]),
    ("required", "targets: [{name: t}]\n", ["F:1: targets[t].hosts: required field missing"]),
    ("top-level-typo", "target: []\n", ["F:1: target: unknown field 'target'; did you mean 'targets'? Valid fields: targets, proxies"]),
    (
        "date",
        "proxies: [{name: p, credentials: [{name: c, auth: api_key, secret: x, expires_at: tomorrow}]}]\n",
        ["F:1: proxies[p].credentials[c].expires_at: expected a date and time like 2027-01-31T00:00:00Z; got the string 'tomorrow'"],
    ),
    ("mapping", "targets: [{name: t, hosts: [a.test], credentials: [{name: c, kind: custom, headers: [a]}]}]\n", ["F:1: targets[t].credentials[c].headers: expected a mapping (name: value); got a list"]),
]


@pytest.mark.parametrize("text, expected", [pytest.param(t, e, id=i) for i, t, e in CASES])
def test_messages(tmp_path, text, expected):
    assert errors_of(tmp_path, text) == expected


LIBRARY_WORDING = ("Input should", "should have", "after validation", "Field required", "valid dictionary", "instance of", "Unable to extract", "Input tag", "discriminator", "JsonPathValue", "HeaderValue", "builtin-detector", "function-")

BAD = [
    "proxies: [{name: p, meters: [{name: m, limits: 5}]}]",
    "proxies: [{name: p, active: maybe}]",
    "proxies: [{name: p, targets: stripe}]",
    "targets: [{name: t, hosts: [a.test], schemes: [ftp]}]",
    "targets: [{name: t, hosts: [a.test], description: [1]}]",
    "proxies: [{name: p, rules: [{name: r, effect: deny, priority: '5'}]}]",
    "proxies: [{name: p, rules: [{name: r, effect: deny, path: {patern: x}}]}]",
    "proxies: [{name: p, rules: [{name: r, effect: block, headers: [{value: x}]}]}]",
    "proxies: [{name: p, credentials: [{name: c, auth: jwt_verify, issuer: i, audience: a, secret: s, leeway: soon, algorithms: [HS999]}]}]",
    "proxies: [{name: p, redact: [{detectors: [{custom: 'a', nam: x}], action: erase}]}]",
    "proxies: [{name: p, meters: [{name: m, type: response_value, response_value: {header: 5}}]}]",
    "proxies: [{name: p, meters: [{name: m, type: response_value, response_value: 7}]}]",
    "proxies: [{name: p, validate: [{max_body_bytes: big}]}]",
    "proxies: [{name: p, filters: [{retain: []}]}]",
    "proxies: [{mode: enforce}]",
    "targets: [{name: t, hosts: [], credentials: [{name: c, kind: oauth2_client_credentials, token_url: 5}]}]",
]


@pytest.mark.parametrize("text", BAD)
def test_no_validation_library_wording(tmp_path, text):
    errors = errors_of(tmp_path, text + "\n")
    assert errors
    for e in errors:
        assert not any(w in e for w in LIBRARY_WORDING), e
