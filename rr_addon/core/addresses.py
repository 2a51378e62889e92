"""Which upstream addresses rr may connect to, and which names a request may carry.

Both are pure functions of strings, so they are table-tested without sockets.

An address is *reachable by default* only if it is globally routable. Loopback,
RFC 1918, CGNAT (100.64.0.0/10, which also carries Tailscale and some cloud
metadata services), link-local, site-local (fec0::/10), unique-local, multicast,
reserved, documentation and benchmarking ranges are not — Python's
`ipaddress.is_global` over IANA's special-purpose registries. IPv6 forms that
embed an IPv4 address (IPv4-mapped, 6to4, Teredo, NAT64 64:ff9b::/96) are judged
by the embedded address, so a private IPv4 host cannot hide inside one.
"""

from __future__ import annotations

import ipaddress

from rr_addon.policy.hosts import normalize_host

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # the client's address
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_global_address(address: str) -> bool:
    """True when `address` (an IP literal, optionally with a `%zone`) is globally routable."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL:
            return False
        inner = _embedded_v4(ip)
        if inner is not None:
            return is_global_address(str(inner))
    # site-local (fec0::/10) is deprecated, not in the registry, and `is_global` misses it
    return ip.is_global and not ip.is_multicast and not (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)


# ---------------------------------------------------------------------------- authority


def parse_authority(text: str) -> tuple[str, int | None] | None:
    """`host[:port]` (IPv6 in brackets) as (normalised host, port or None); None if malformed."""
    text = text.strip()
    if not text or any(c in text for c in "/@?#\\ \t"):
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        host, rest = text[1:end], text[end + 1 :]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, rest = text, ""
        elif ":" in host:  # an unbracketed IPv6 literal is not an authority
            return None
        else:
            rest = ":" + port_text
    port: int | None = None
    if rest:
        if not rest.startswith(":") or not rest[1:].isdigit() or len(rest) > 6:
            return None
        port = int(rest[1:])
        if not 0 < port < 65536:
            return None
    host = normalize_host(host)
    return (host, port) if host else None


def names_other_host(text: str, host: str, port: int) -> bool:
    """True when the authority `text` (a Host header, `:authority` or the
    authority of an absolute-form target) names another host than `host`, or
    another port than `port`. A missing port is accepted (clients omit the
    default one; virtual hosts are chosen by name): the name must match exactly."""
    parsed = parse_authority(text)
    if parsed is None:
        return True
    name, named_port = parsed
    return name != normalize_host(host) or (named_port is not None and named_port != port)


def sni_names_other_host(sni: str, host: str) -> bool:
    return normalize_host(sni) != normalize_host(host)
