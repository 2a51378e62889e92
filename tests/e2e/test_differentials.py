"""Parsing differentials through a real `rr run` (docs/security.md): repeated query
parameters, method overrides, `;` path parameters, JSON bodies under another
content type, and an rr key sent in a second header. Each request either gets
rr's 400/403 with nothing forwarded, or reaches the upstream exactly as decided."""

from __future__ import annotations

import json
import ssl
import uuid

import httpx
import pytest

from rr_addon.core import reasons
from rr_addon.testing.home import prepare_home, rr_cli
from rr_addon.testing.proxy import ProxyProcess
from rr_addon.testing.upstream import Upstream

POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    rules:
      - {{name: no-deletes, effect: deny, methods: [DELETE]}}
      - {{name: no-stream, effect: deny, methods: [POST], body: [{{json_path: "$.stream", value: "^true$"}}]}}
    credentials:
      - {{name: k, kind: api_key, header: X-Api-Key, secret: sk_diff_SECRET}}
  - name: matrix
    hosts: ["127.0.0.1:{port2}"]
    allow_private_addresses: true
    allow_path_parameters: true
    credentials: [{{name: n, kind: none}}]
proxies:
  - name: agent
    targets: [{{target: api}}, {{target: matrix}}]
    credentials:
      - {{name: a, auth: api_key, secret: KEY_diff_a}}
      - name: strict
        auth: api_key
        secret: KEY_diff_strict
        default_effect: deny
        rules:
          - {{name: small-pages, effect: allow, methods: [GET], query: [{{name: "^limit$", value: "^[0-9]{{1,3}}$"}}]}}
          - {{name: mini, effect: allow, methods: [POST], body: [{{json_path: "$.model", value: "^gpt-4o-mini$"}}]}}
"""


@pytest.fixture(scope="module")
def second_upstream(pki):
    with Upstream(pki) as up:
        yield up


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, upstream, second_upstream, pki):
    home = tmp_path_factory.mktemp("rr-diff")
    prepare_home(home, POLICY.format(port=upstream.port, port2=second_upstream.port))
    with ProxyProcess(home, upstream_ca=pki.ca_cert) as p:
        p.ports = {"api": upstream.port, "matrix": second_upstream.port}
        yield p


def call(proxy, method, path, key="KEY_diff_a", target="api", **kw):
    """A request through the tunnel: the rr key travels on the CONNECT (Proxy-Authorization)."""
    verify = ssl.create_default_context(cafile=str(proxy.ca))
    with httpx.Client(proxy=proxy.url("agent", key), verify=verify, timeout=10) as c:
        return c.request(method, f"https://127.0.0.1:{proxy.ports[target]}{path}", **kw)


def marked(upstream, marker):
    return [r for r in upstream.received if r.header("x-marker") == marker]


def refused(r, status, code, message):
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert (error["code"], r.headers["rr-proxy-code"]) == (code, code)
    assert error["message"].startswith(message), error["message"]


STRICT_DEFAULT = "no rule matched; scope default denies (proxy-credential)"


@pytest.mark.parametrize(
    "method, path, kw, key, outcome",
    [
        # a. an allow rule on a query parameter holds for every occurrence
        ("GET", "/v1/charges?limit=5", {}, "KEY_diff_strict", None),
        ("GET", "/v1/charges?limit=5&limit=50", {}, "KEY_diff_strict", None),
        ("GET", "/v1/charges?limit=5&limit=500000", {}, "KEY_diff_strict", (403, "access-denied", STRICT_DEFAULT)),
        ("GET", "/v1/charges?limit=500000&limit=5", {}, "KEY_diff_strict", (403, "access-denied", STRICT_DEFAULT)),
        # b. method overrides are refused, whatever they name
        ("POST", "/v1/customers/cus_1", {"headers": {"X-HTTP-Method-Override": "DELETE"}}, "KEY_diff_a", (400, "invalid-request", reasons.METHOD_OVERRIDE)),
        ("POST", "/v1/customers/cus_1", {"headers": {"X-HTTP-Method": "DELETE"}}, "KEY_diff_a", (400, "invalid-request", reasons.METHOD_OVERRIDE)),
        ("POST", "/v1/customers/cus_1", {"headers": {"X-Method-Override": "POST"}}, "KEY_diff_a", (400, "invalid-request", reasons.METHOD_OVERRIDE)),
        ("POST", "/v1/customers/cus_1", {"headers": {"X_HTTP_Method_Override": "DELETE"}}, "KEY_diff_a", (400, "invalid-request", reasons.METHOD_OVERRIDE)),
        ("POST", "/v1/customers/cus_1?_method=DELETE", {}, "KEY_diff_a", (400, "invalid-request", reasons.METHOD_OVERRIDE)),
        ("DELETE", "/v1/customers/cus_1", {}, "KEY_diff_a", (403, "access-denied", "denied by rule (target rule no-deletes)")),
        # c. ';' path parameters are refused unless the target opts in (matrix does)
        ("GET", "/v1/customers;x/cus_1", {}, "KEY_diff_a", (400, "invalid-request", reasons.PATH_PARAMETERS)),
        ("GET", "/v1/customers%3Bx/cus_1", {}, "KEY_diff_a", (400, "invalid-request", reasons.PATH_PARAMETERS)),
        # d. json_path rules read the body as JSON whatever the content type
        ("POST", "/v1/chat", {"content": b'{"stream": true}', "headers": {"content-type": "text/plain"}}, "KEY_diff_a", (403, "access-denied", "denied by rule (target rule no-stream)")),
        ("POST", "/v1/chat", {"content": b'{"stream": true}'}, "KEY_diff_a", (403, "access-denied", "denied by rule (target rule no-stream)")),
        ("POST", "/v1/chat", {"content": b'{"stream": false}', "headers": {"content-type": "text/plain"}}, "KEY_diff_a", None),
        ("POST", "/v1/chat", {"content": b'{"model": "gpt-4o-mini"}', "headers": {"content-type": "text/plain"}}, "KEY_diff_strict", None),
        ("POST", "/v1/chat", {"content": b"model: gpt-4o-mini", "headers": {"content-type": "text/plain"}}, "KEY_diff_strict", (403, "access-denied", STRICT_DEFAULT)),
        ("POST", "/v1/chat", {"data": {"model": ["gpt-4o-mini", "gpt-4o"]}}, "KEY_diff_strict", (403, "access-denied", STRICT_DEFAULT)),
        (
            "POST",
            "/v1/chat",
            {"content": b'{"stream": true}', "headers": {"content-type": "application/x-www-form-urlencoded"}},
            "KEY_diff_a",
            (400, "invalid-request", reasons.BODY_FORM_AND_JSON),
        ),
        ("POST", "/v1/chat", {"content": b'{"stream": true, "stream": false}', "headers": {"content-type": "application/json"}}, "KEY_diff_a", (400, "invalid-request", reasons.BODY_JSON_REPEATED_KEY)),
    ],
    ids=[
        "query-one",
        "query-dup-all-small",
        "query-dup-second-large",
        "query-dup-first-large",
        "override-header",
        "override-x-http-method",
        "override-same-method",
        "override-underscores",
        "override-query",
        "delete-denied",
        "path-parameters",
        "path-parameters-encoded",
        "json-as-text-plain",
        "json-without-content-type",
        "json-as-text-plain-allowed",
        "allow-rule-reads-text-plain-json",
        "allow-rule-opaque-body",
        "form-repeated-field",
        "form-that-is-json",
        "json-repeated-key",
    ],
)
def test_differentials(proxy, upstream, method, path, kw, key, outcome):
    marker = uuid.uuid4().hex
    kw = {**kw, "headers": {**kw.get("headers", {}), "x-marker": marker}}
    r = call(proxy, method, path, key, **kw)
    got = marked(upstream, marker)
    if outcome is None:
        assert r.status_code == 200, r.text
        (req,) = got
        assert (req.method, req.path) == (method, path)
        assert req.header("x-api-key") == "sk_diff_SECRET"
    else:
        refused(r, *outcome)
        assert got == []


def test_path_parameters_reach_a_target_that_opts_in(proxy, second_upstream):
    marker = uuid.uuid4().hex
    r = call(proxy, "GET", "/v1/customers;x/cus_1", target="matrix", headers={"x-marker": marker})
    assert r.status_code == 200, r.text
    (req,) = marked(second_upstream, marker)
    assert req.path == "/v1/customers;x/cus_1"
    exported = rr_cli(proxy.home, "export").output
    assert "allow_path_parameters: true" in exported


@pytest.mark.parametrize(
    "target, authorization, forwarded",
    [
        ("api", "Bearer KEY_diff_a", None),  # api_key injection in X-Api-Key leaves Authorization alone
        ("api", "KEY_diff_strict", None),  # another credential's key, raw
        ("matrix", "Basic cnI6S0VZX2RpZmZfYQ==", None),  # kind none: nothing is injected; rr:KEY_diff_a as Basic
        ("matrix", "Bearer the-callers-own-token", "Bearer the-callers-own-token"),  # not an rr key: forwarded
    ],
    ids=["api-key-target", "other-credential-raw", "none-target-basic", "not-an-rr-key"],
)
def test_rr_key_in_authorization_is_not_forwarded(proxy, upstream, second_upstream, target, authorization, forwarded):
    marker = uuid.uuid4().hex
    r = call(proxy, "GET", "/v1/whoami", target=target, headers={"x-marker": marker, "Authorization": authorization})
    assert r.status_code == 200, r.text
    (req,) = marked(upstream if target == "api" else second_upstream, marker)
    assert req.header("authorization") == forwarded
    for _, value in req.headers:
        assert "KEY_diff" not in value and "S0VZX2RpZmZf" not in value
    echoed = json.dumps(r.json())
    assert "KEY_diff" not in echoed


def test_method_override_in_a_form_body_is_refused(proxy, upstream):
    """A `_method=DELETE` field in an urlencoded POST body is how Rails, Laravel, Symfony and
    Express's method-override turn a POST into a DELETE (the same override rr refuses in the
    query). Refused with 400 invalid-request (method override), nothing forwarded — as for
    `?_method=` — although no rule of the target reads the body. (From the red-team pass.)"""
    marker = uuid.uuid4().hex
    r = call(
        proxy, "POST", "/anything/customers/cus_1",
        content=b"_method=DELETE", headers={"content-type": "application/x-www-form-urlencoded", "x-marker": marker},
    )
    refused(r, 400, "invalid-request", reasons.METHOD_OVERRIDE)
    assert marked(upstream, marker) == []


@pytest.mark.parametrize("body", [b'{"stream": false, "Stream": true}', b'{"stream": false, "STREAM": true}'])
def test_json_keys_that_differ_only_in_case_are_refused(proxy, upstream, body):
    """Go's encoding/json (the decoder of most Go APIs) matches object keys to struct fields
    case-insensitively, the last match winning: `{"stream": false, "Stream": true}` is
    `stream: true` upstream, while rr's `$.stream` reads false and the `no-stream` deny rule
    would let it pass. Refused like repeated keys: 400 invalid-request. (From the red-team pass.)"""
    marker = uuid.uuid4().hex
    r = call(proxy, "POST", "/anything/chat", content=body, headers={"content-type": "application/json", "x-marker": marker})
    refused(r, 400, "invalid-request", reasons.BODY_JSON_KEYS_DIFFER_IN_CASE)
    assert marked(upstream, marker) == []


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_form_over_the_inspection_limit_is_refused(proxy, second_upstream, chunked):
    """rr must read a form to find `_method`: one over rr_inspect_limit (1 MiB) is refused
    with 413 — before it is read when its length is announced, as it arrives when not —
    even on a target without body rules. Any other body of that size still passes."""
    marker = uuid.uuid4().hex
    body = b"a=" + b"x" * (1024 * 1024)
    content = iter([body[i : i + 65536] for i in range(0, len(body), 65536)]) if chunked else body
    headers = {"content-type": "application/x-www-form-urlencoded", "x-marker": marker}
    r = call(proxy, "POST", "/v1/upload", target="matrix", content=content, headers=headers)
    refused(r, 413, "payload-too-large", reasons.FORM_OVER_INSPECTION_LIMIT)
    assert marked(second_upstream, marker) == []
    r = call(proxy, "POST", "/v1/upload", target="matrix", content=body, headers={**headers, "content-type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    assert len(marked(second_upstream, marker)) == 1
