"""Host patterns of targets and the index that maps a request's host to a target.

A pattern is an exact host (`api.stripe.com`, `127.0.0.1`, `[::1]`) or a
wildcard (`*.example.com`: any subdomain at any depth, not the apex), with an
optional `:port`. Without a port a pattern matches the scheme's default port
(443 for https, 80 for http). Lookup walks the request host's suffixes, so its
cost depends on the number of labels in the host, never on the number of
targets; the most specific pattern wins (exact, then the longest suffix).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Generic, Iterable, TypeVar

DEFAULT_PORTS = {"https": 443, "http": 80}

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class HostPattern:
    host: str  # normalised: lower-case, no trailing dot; for wildcards the suffix without "*."
    port: int | None
    wildcard: bool

    def __str__(self) -> str:
        host = f"*.{self.host}" if self.wildcard else self.host
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        return host if self.port is None else f"{host}:{self.port}"


def normalize_host(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host


def parse_host_pattern(text: str) -> HostPattern:
    """Parse `host`, `*.suffix`, either with `:port`. Raises ValueError with a
    sentence suitable for `rr apply`."""
    raw = text.strip()
    if not raw:
        raise ValueError("empty host")
    if "/" in raw or "@" in raw or "://" in raw:
        raise ValueError(f"{text!r} is not a host (no scheme, path or user info)")
    port: int | None = None
    host = raw
    if raw.startswith("["):  # [v6]:port
        end = raw.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: unterminated IPv6 literal")
        host, rest = raw[1:end], raw[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r}: expected ':port' after the IPv6 literal")
            port = _parse_port(rest[1:], text)
    elif raw.count(":") == 1:
        host, port_text = raw.split(":")
        port = _parse_port(port_text, text)
    elif raw.count(":") > 1:
        raise ValueError(f"{text!r}: write IPv6 literals as [addr] or [addr]:port")
    wildcard = host.startswith("*.")
    if wildcard:
        host = host[2:]
    host = normalize_host(host)
    if "*" in host:
        raise ValueError(f"{text!r}: '*' is only allowed as the first label ('*.example.com')")
    if not host:
        raise ValueError(f"{text!r}: empty host")
    if not _is_ip(host):
        try:
            host.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError(f"{text!r}: write internationalised names in their xn-- (IDNA) form") from None
        for label in host.split("."):
            if not label or len(label) > 63 or not all(c.isalnum() or c in "-_" for c in label):
                raise ValueError(f"{text!r}: invalid host label {label!r}")
    elif wildcard:
        raise ValueError(f"{text!r}: a wildcard cannot apply to an IP address")
    return HostPattern(host, port, wildcard)


def _parse_port(text: str, original: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{original!r}: invalid port {text!r}")
    return int(text)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class HostIndex(Generic[V]):
    """Immutable-after-build map from host patterns to values."""

    __slots__ = ("_exact", "_wild")

    def __init__(self, entries: Iterable[tuple[HostPattern, V]] = ()) -> None:
        self._exact: dict[tuple[str, int | None], V] = {}
        self._wild: dict[tuple[str, int | None], V] = {}
        for pattern, value in entries:
            table = self._wild if pattern.wildcard else self._exact
            key = (pattern.host, pattern.port)
            if key in table:
                raise ValueError(f"host {pattern} is listed twice")
            table[key] = value

    def lookup(self, host: str, port: int, scheme: str) -> V | None:
        """The value of the most specific pattern matching host:port, or None."""
        host = normalize_host(host)
        default = DEFAULT_PORTS.get(scheme) == port
        exact = self._exact
        if (v := exact.get((host, port))) is not None:
            return v
        if default and (v := exact.get((host, None))) is not None:
            return v
        wild = self._wild
        if not wild:
            return None
        i = host.find(".")
        while i >= 0:
            suffix = host[i + 1 :]
            if (v := wild.get((suffix, port))) is not None:
                return v
            if default and (v := wild.get((suffix, None))) is not None:
                return v
            i = host.find(".", i + 1)
        return None

    def ports(self) -> set[int | None]:
        return {p for _, p in self._exact} | {p for _, p in self._wild}

    def __len__(self) -> int:
        return len(self._exact) + len(self._wild)
