"""Response filters, redaction (both directions) and request validation through a
real proxy: stacked scopes, gzip upstreams, 422 for non-JSON, the buffer limit,
echoed secrets inside compressed bodies, and streaming of unfiltered bodies."""

from __future__ import annotations

import json
import ssl
import uuid

import httpx
import pytest

from rr_addon.testing.home import prepare_home
from rr_addon.testing.proxy import ProxyProcess

SECRET = "sk_filter_SECRET_123456"
POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    filters: [{{destroy: ["$.data[*].card"]}}]
    validate:
      - {{max_body_bytes: 2000}}
      - {{methods: [POST], path: "^/v1/charges$", content_types: [application/json], json_schema: {{type: object, required: [amount], properties: {{amount: {{type: integer}}}}}}}}
    credentials:
      - name: live
        kind: bearer
        secret: {secret}
        filters: [{{destroy: ["$.data[*].note"]}}]
  - name: api-text
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials: [{{name: live, kind: bearer, secret: {secret}}}]
proxies:
  - name: filtered
    targets: [{{target: api}}]
    filters: [{{retain: ["$.data[*].id", "$.data[*].email", "$.object", "$.headers", "$.body"]}}]
    redact:
      - {{detectors: [email], action: hash}}
      - {{detectors: [credit_card, email], direction: request}}
    credentials: [{{name: a, auth: api_key, secret: KEY_f}}]
  - name: text
    targets: [{{target: api-text}}]
    redact: [{{detectors: [email, credit_card]}}]
    credentials: [{{name: t, auth: api_key, secret: KEY_t}}]
"""
PLAIN_POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials: [{{name: live, kind: bearer, secret: {secret}}}]
proxies:
  - name: plain
    targets: [{{target: api}}]
    credentials: [{{name: p, auth: api_key, secret: KEY_p}}]
"""


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, upstream, pki):
    home = tmp_path_factory.mktemp("rr-filters")
    prepare_home(home, POLICY.format(port=upstream.port, secret=SECRET))
    with ProxyProcess(home, upstream_ca=pki.ca_cert, args=["--set", "rr_buffer_limit=200000"]) as p:
        p.upstream_port = upstream.port
        yield p


def call(proxy, method, path, key="KEY_f", user="filtered", **kw):
    verify = ssl.create_default_context(cafile=str(proxy.ca))
    with httpx.Client(proxy=proxy.url(user, key), verify=verify, timeout=30) as c:
        return c.request(method, f"https://127.0.0.1:{proxy.upstream_port}{path}", **kw)


@pytest.mark.parametrize("gzip", [False, True], ids=["identity", "gzip"])
def test_stacked_filters_and_hashing_redaction(proxy, gzip):
    r = call(proxy, "GET", "/bytes/3000" + ("?gzip=1" if gzip else ""))
    assert r.status_code == 200, r.text
    assert "content-encoding" not in r.headers  # rr sends the filtered body uncompressed
    doc = r.json()
    assert set(doc) == {"object", "data"}  # proxy scope retained these
    assert doc["object"] == "list" and len(doc["data"]) > 10
    for item in doc["data"]:
        assert set(item) == {"id", "email"}  # card: target scope; note: target credential scope; retain: proxy
        assert item["email"].startswith("[EMAIL:") and "someone@example.com" not in item["email"]
    assert len({i["email"] for i in doc["data"]}) == 1  # a stable pseudonym: joins still work
    assert r.headers["content-length"] == str(len(r.content))


def test_request_redaction_scrubs_what_leaves(proxy, upstream):
    marker = uuid.uuid4().hex
    prompt = {"prompt": f"my card is 4242 4242 4242 4242, mail me at jane.doe@example.org ({marker})"}
    r = call(proxy, "POST", f"/anything/{marker}", json=prompt)
    assert r.status_code == 200
    (got,) = [x for x in upstream.received if marker in x.path]
    sent = json.loads(got.body)
    assert sent["prompt"] == f"my card is [REDACTED:CREDIT_CARD], mail me at [REDACTED:EMAIL] ({marker})"


def test_non_json_2xx_with_filters_is_422(proxy):
    r = call(proxy, "GET", "/text/x")
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "unfilterable-response" and err["message"].startswith("response body is not JSON, and filters apply")
    assert "someone@example.com" not in r.text


def test_text_redaction_and_echoed_secret_in_a_gzip_body(proxy):
    r = call(proxy, "GET", "/text/x?gzip=1", key="KEY_t", user="text")
    assert r.status_code == 200
    assert r.text.startswith("hello [REDACTED:EMAIL], card [REDACTED:CREDIT_CARD], echo Bearer [rr:api-text/live]")
    assert SECRET not in r.text


@pytest.mark.parametrize("ctype", ["", "application/x-ndjson", "application/xml"], ids=["no-content-type", "ndjson", "xml"])
def test_a_content_type_rr_does_not_know_is_redacted_too(proxy, ctype):
    # the upstream (or a caller asking it for another format) picks the label: redaction does not depend on it
    r = call(proxy, "GET", f"/text/x?ctype={ctype}", key="KEY_t", user="text")
    assert r.status_code == 200
    assert r.content.startswith(b"hello [REDACTED:EMAIL], card [REDACTED:CREDIT_CARD]"), r.content
    assert b"someone@example.com" not in r.content and SECRET.encode() not in r.content


def test_over_the_buffer_limit_is_502_not_unfiltered_data(proxy):
    r = call(proxy, "GET", "/bytes/400000")
    assert r.status_code == 502
    err = r.json()["error"]
    assert err["code"] == "response-too-large"
    assert "someone@example.com" not in r.text
    r = call(proxy, "GET", "/bytes/400000?gzip=1")  # compressed small, large once decoded
    assert r.status_code == 502 and r.json()["error"]["code"] == "response-too-large"


@pytest.mark.parametrize(
    "kw, status, code, message",
    [
        ({"json": {"amount": 100}}, 200, None, None),
        ({"json": {"currency": "eur"}}, 400, "invalid-request", "request body does not match the JSON schema: /amount: 'amount' is a required property"),
        ({"json": {"amount": "100"}}, 400, "invalid-request", "request body does not match the JSON schema: /amount: value is not of type 'integer'"),
        ({"content": b"amount=100", "headers": {"content-type": "application/x-www-form-urlencoded"}}, 415, "unsupported-media-type", "request content type not allowed"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "invalid-request", "request body is not valid JSON"),
        ({"json": {"amount": 1, "pad": "x" * 3000}}, 413, "payload-too-large", "request body exceeds the size limit"),
    ],
    ids=["valid", "missing-field", "wrong-type", "wrong-content-type", "broken-json", "too-big"],
)
def test_validation(proxy, upstream, kw, status, code, message):
    marker = uuid.uuid4().hex
    kw.setdefault("headers", {})["x-marker"] = marker
    r = call(proxy, "POST", "/v1/charges", **kw)
    assert r.status_code == status, r.text
    forwarded = [x for x in upstream.received if x.header("x-marker") == marker]
    if code is None:
        assert len(forwarded) == 1
    else:
        assert r.json()["error"]["code"] == code and r.json()["error"]["message"].startswith(message), r.json()
        assert forwarded == []


def vm_hwm_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def test_unfiltered_multi_megabyte_response_is_streamed(tmp_path, upstream, pki):
    home = tmp_path / "plain"
    prepare_home(home, PLAIN_POLICY.format(port=upstream.port, secret=SECRET))
    with ProxyProcess(home, upstream_ca=pki.ca_cert) as proxy:
        verify = ssl.create_default_context(cafile=str(proxy.ca))
        with httpx.Client(proxy=proxy.url("plain", "KEY_p"), verify=verify, timeout=60) as c:
            assert c.get(f"https://127.0.0.1:{upstream.port}/bytes/1000").status_code == 200  # warm up
            before = vm_hwm_kb(proxy.proc.pid)
            with c.stream("GET", f"https://127.0.0.1:{upstream.port}/bytes/30000000") as r:
                size = sum(len(chunk) for chunk in r.iter_raw())
            assert r.status_code == 200 and size > 29_000_000
            grown_mb = (vm_hwm_kb(proxy.proc.pid) - before) / 1024
        # buffering a 30 MB body would raise the proxy's peak memory by at least that much
        assert grown_mb < 15, f"peak RSS grew {grown_mb:.1f} MB while relaying 30 MB"
