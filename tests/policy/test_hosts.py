import pytest

from rr_addon.policy.hosts import HostIndex, HostPattern, parse_host_pattern


@pytest.mark.parametrize(
    "text, expected",
    [
        ("api.stripe.com", HostPattern("api.stripe.com", None, False)),
        ("API.Stripe.COM.", HostPattern("api.stripe.com", None, False)),
        ("*.example.com", HostPattern("example.com", None, True)),
        ("api.stripe.com:8443", HostPattern("api.stripe.com", 8443, False)),
        ("*.example.com:443", HostPattern("example.com", 443, True)),
        ("127.0.0.1:9000", HostPattern("127.0.0.1", 9000, False)),
        ("[::1]:9000", HostPattern("::1", 9000, False)),
        ("[::1]", HostPattern("::1", None, False)),
        ("xn--bcher-kva.example", HostPattern("xn--bcher-kva.example", None, False)),
    ],
    ids=lambda v: str(v),
)
def test_parse(text, expected):
    assert parse_host_pattern(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty host"),
        ("https://api.stripe.com", "is not a host"),
        ("api.stripe.com/v1", "is not a host"),
        ("user@host", "is not a host"),
        ("a.*.example.com", "'*' is only allowed as the first label"),
        ("*.127.0.0.1", "a wildcard cannot apply to an IP address"),
        ("host:0", "invalid port"),
        ("host:70000", "invalid port"),
        ("host:abc", "invalid port"),
        ("::1", "write IPv6 literals as [addr]"),
        ("[::1", "unterminated IPv6 literal"),
        ("bad host", "invalid host label"),
        ("bücher.example", "xn-- (IDNA) form"),
        ("a..b", "invalid host label"),
    ],
)
def test_parse_rejects(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*").replace("[", r"\[")):
        parse_host_pattern(text)


INDEX = HostIndex(
    [
        (parse_host_pattern("api.stripe.com"), "stripe"),
        (parse_host_pattern("*.example.com"), "wild"),
        (parse_host_pattern("deep.example.com"), "deep"),
        (parse_host_pattern("*.b.example.com"), "wild-b"),
        (parse_host_pattern("127.0.0.1:9443"), "local"),
        (parse_host_pattern("ports.test:8443"), "ports-8443"),
        (parse_host_pattern("ports.test"), "ports-default"),
    ]
)


@pytest.mark.parametrize(
    "host, port, scheme, expected",
    [
        ("api.stripe.com", 443, "https", "stripe"),
        ("API.STRIPE.COM", 443, "https", "stripe"),
        ("api.stripe.com.", 443, "https", "stripe"),
        ("api.stripe.com", 80, "http", "stripe"),  # default port of the scheme
        ("api.stripe.com", 8443, "https", None),  # no port in the pattern: default ports only
        ("api.stripe.com", 80, "https", None),
        ("stripe.com", 443, "https", None),
        ("x.api.stripe.com", 443, "https", None),  # exact patterns do not cover subdomains
        ("a.example.com", 443, "https", "wild"),
        ("a.b.c.example.com", 443, "https", "wild"),  # any depth
        ("example.com", 443, "https", None),  # not the apex
        ("deep.example.com", 443, "https", "deep"),  # exact beats wildcard
        ("x.b.example.com", 443, "https", "wild-b"),  # longest suffix wins
        ("b.example.com", 443, "https", "wild"),
        ("127.0.0.1", 9443, "https", "local"),
        ("127.0.0.1", 443, "https", None),
        ("ports.test", 8443, "https", "ports-8443"),
        ("ports.test", 443, "https", "ports-default"),
        ("evilexample.com", 443, "https", None),
    ],
)
def test_lookup(host, port, scheme, expected):
    assert INDEX.lookup(host, port, scheme) == expected


def test_duplicate_pattern_is_refused():
    with pytest.raises(ValueError, match="listed twice"):
        HostIndex([(parse_host_pattern("a.test"), 1), (parse_host_pattern("A.test"), 2)])
