"""Redaction over the JSON text through a real proxy, against a hostile upstream
that hides values behind JSON escapes, puts them in keys and numbers, and sends
bodies with nothing to redact (which now pass untouched, byte for byte)."""

from __future__ import annotations

import json
import ssl
import uuid

import httpx
import pytest

from rr_addon.testing.home import prepare_home
from rr_addon.testing.proxy import ProxyProcess

POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials: [{{name: live, kind: bearer, secret: sk_text_SECRET_123456}}]
proxies:
  - name: text
    targets: [{{target: api}}]
    redact: [{{detectors: [email, credit_card, secret]}}]
    credentials: [{{name: t, auth: api_key, secret: KEY_t}}]
"""


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, upstream, pki):
    home = tmp_path_factory.mktemp("rr-redact-text")
    prepare_home(home, POLICY.format(port=upstream.port))
    with ProxyProcess(home, upstream_ca=pki.ca_cert) as p:
        p.upstream_port = upstream.port
        yield p


def fetch(proxy, upstream, body: bytes) -> httpx.Response:
    path = f"/hostile/{uuid.uuid4().hex}"
    upstream.answer(path, lambda _req: (200, "application/json", body))
    verify = ssl.create_default_context(cafile=str(proxy.ca))
    with httpx.Client(proxy=proxy.url("text", "KEY_t"), verify=verify, timeout=30) as c:
        return c.get(f"https://127.0.0.1:{proxy.upstream_port}{path}")


def test_values_hidden_behind_escapes_are_redacted(proxy, upstream):
    body = (
        b'{"a": "mail john\\u0040example.com", "b": "jane@exam\\u0070le.org", "c": "4242\\u00204242 4242 4242",'
        b' "d": "https:\\/\\/hooks.slack.com\\/services\\/T0000\\/B0000\\/XXXXXXXXXXXXXXXXXXXXXXXX", "e": "\\"x@example.com\\""}'
    )
    r = fetch(proxy, upstream, body)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "a": "mail [REDACTED:EMAIL]",
        "b": "[REDACTED:EMAIL]",
        "c": "[REDACTED:CREDIT_CARD]",
        "d": "[REDACTED:SECRET]",
        "e": '"[REDACTED:EMAIL]"',
    }
    assert "example" not in r.text.replace("\\u0040", "@") and "hooks.slack" not in r.text.replace("\\/", "/")


def test_keys_and_numbers_are_left_as_they_are(proxy, upstream):
    body = b'{"owner@example.com": {"card": 4242424242424242, "text": "card 4242 4242 4242 4242"}}'
    r = fetch(proxy, upstream, body)
    assert r.json() == {"owner@example.com": {"card": 4242424242424242, "text": "card [REDACTED:CREDIT_CARD]"}}


def test_a_body_with_nothing_to_redact_arrives_byte_for_byte(proxy, upstream):
    body = json.dumps({"name": "Renée", "price": "1.50", "url": "https://x.test/a/b"}, indent=1, ensure_ascii=False).encode()[:-1] + b', "n": 1.50e0}'
    r = fetch(proxy, upstream, body)
    assert r.status_code == 200
    assert r.content == body  # not parsed and written again: spacing, raw UTF-8 and 1.50e0 as they were
