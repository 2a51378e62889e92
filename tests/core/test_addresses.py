"""Which addresses rr connects to by default, and which names a request may carry (table tests)."""

from __future__ import annotations

import pytest

from rr_addon.core import reasons
from rr_addon.core.addresses import is_global_address, names_other_host, parse_authority
from rr_addon.core.decide import other_host
from rr_addon.core.types import RequestFacts


@pytest.mark.parametrize(
    "address, reachable",
    [
        ("8.8.8.8", True),
        ("2606:4700::1111", True),
        ("64:ff9b::808:808", True),  # NAT64 of a public address
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("100.64.0.1", False),  # CGNAT / Tailscale
        ("100.127.255.254", False),
        ("169.254.169.254", False),  # link-local: cloud metadata
        ("0.0.0.0", False),
        ("255.255.255.255", False),
        ("192.0.2.1", False),  # documentation
        ("198.18.0.1", False),  # benchmarking
        ("224.0.0.1", False),  # multicast
        ("::1", False),
        ("::", False),
        ("fe80::1%eth0", False),
        ("fec0::1", False),  # site-local: is_global misses it
        ("fd00::1", False),  # unique-local
        ("ff02::1", False),
        ("2001:db8::1", False),
        ("::ffff:10.0.0.1", False),  # IPv4-mapped
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("64:ff9b:1::1", False),  # local-use NAT64
        ("2002:a00:1::1", False),  # 6to4 of 10.0.0.1
        ("2002:808:808::1", True),  # 6to4 of 8.8.8.8
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", False),  # Teredo (client 10.0.0.1)
    ],
)
def test_is_global_address(address, reachable):
    assert is_global_address(address) is reachable


@pytest.mark.parametrize(
    "text, parsed",
    [
        ("api.example.com", ("api.example.com", None)),
        ("API.Example.COM.:8443", ("api.example.com", 8443)),
        ("[::1]:443", ("::1", 443)),
        ("::1", None),
        ("a.example:0", None),
        ("a.example:99999", None),
        ("a.example:x", None),
        ("user@a.example", None),
        ("a.example/x", None),
        ("", None),
    ],
)
def test_parse_authority(text, parsed):
    assert parse_authority(text) == parsed


def facts(**kw) -> RequestFacts:
    base = dict(method="GET", scheme="https", host="api.example.com", port=443, path="/")
    return RequestFacts(**{**base, **kw})


@pytest.mark.parametrize(
    "kw, reason",
    [
        ({}, None),
        ({"headers": (("host", "api.example.com"),)}, None),
        ({"headers": (("host", "API.example.com.:443"),)}, None),
        ({"headers": (("host", "api.example.com:8443"),)}, reasons.HOST_HEADER_OTHER_HOST),
        ({"headers": (("host", "evil.example"),)}, reasons.HOST_HEADER_OTHER_HOST),
        ({"headers": (("host", "api.example.com@evil.example"),)}, reasons.HOST_HEADER_OTHER_HOST),
        ({"headers": (("host", "api.example.com"), ("host", "api.example.com"))}, reasons.HOST_HEADER_REPEATED),
        ({"authority": "api.example.com"}, None),
        ({"authority": "evil.example"}, reasons.AUTHORITY_OTHER_HOST),
        ({"sni": "api.example.com"}, None),
        ({"sni": "evil.example"}, reasons.SNI_OTHER_HOST),
        ({"sni": "evil.example", "headers": (("host", "evil.example"),)}, reasons.HOST_HEADER_OTHER_HOST),
    ],
)
def test_other_host(kw, reason):
    assert other_host(facts(**kw)) == reason
