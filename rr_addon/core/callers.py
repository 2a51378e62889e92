"""Finding the caller's credential in a request (README: who is calling).

Channels, in order; the first one present is used:
1. `Proxy-Authorization` from the CONNECT of this tunnel, else on the request
   itself (plain-HTTP proxying): `Basic base64(user:secret)` or `Bearer <token>`.
2. `X-RR-Authorization`: `Bearer <token>`, `Basic …`, or the raw secret.
3. `Authorization`, then each header a target of this host names in
   `caller_headers`: the same forms as 2.

`Proxy-Authorization` and `X-RR-Authorization` are rr's own and never
forwarded; the others are removed when consumed, and also when they carry an
rr credential though another channel authenticated the caller (docs/security.md).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from rr_addon.core import reasons
from rr_addon.core.types import Presented, RequestFacts  # noqa: F401  (Presented: callers' own value)

PROXY_AUTHORIZATION = "proxy-authorization"
RR_AUTHORIZATION = "x-rr-authorization"
AUTHORIZATION = "authorization"

# Headers rr always removes: they are addressed to rr, never to the upstream.
ALWAYS_STRIPPED = frozenset({PROXY_AUTHORIZATION, RR_AUTHORIZATION})

MAX_CREDENTIAL_LENGTH = 8192  # longer values are refused as malformed, not hashed


@dataclass(frozen=True, slots=True)
class Problem:
    reason: str
    channel: str


def find_presented(facts: RequestFacts, caller_headers: tuple[str, ...] = ()) -> Presented | Problem | None:
    """The credential of the first channel present, a Problem when that channel
    is malformed, or None when the caller presented nothing."""
    if facts.tunnel_authorization:
        return _parse_single("connect", "", facts.tunnel_authorization, proxy_header=True)
    for header, proxy_header in ((PROXY_AUTHORIZATION, True), (RR_AUTHORIZATION, False), (AUTHORIZATION, False)):
        values = facts.header_values(header)
        if values:
            return _parse_single(header, header, values, proxy_header=proxy_header)
    for header in caller_headers:
        values = facts.header_values(header)
        if values:
            return _parse_single(header, header, values, proxy_header=False)
    return None


def candidate_headers(caller_headers: tuple[str, ...]) -> frozenset[str]:
    """Every header that may carry a caller credential: removed from the flow
    when authentication fails, so a mistyped secret never shows in a view."""
    return ALWAYS_STRIPPED | {AUTHORIZATION} | set(caller_headers)


def parse_value(header: str, value: str) -> Presented | None:
    """One value of a non-proxy header read as a credential (forms of channel 2), or None."""
    found = _parse_single(header, header, (value,), proxy_header=False)
    return found if isinstance(found, Presented) else None


def _parse_single(channel: str, header: str, values: list[str] | tuple[str, ...], *, proxy_header: bool) -> Presented | Problem:
    distinct = set(values)
    if len(distinct) > 1:
        return Problem(reasons.AMBIGUOUS_CREDENTIAL, channel)
    value = values[0].strip()
    if not value or len(value) > MAX_CREDENTIAL_LENGTH:
        return Problem(reasons.MALFORMED_CREDENTIAL, channel)
    scheme, _, rest = value.partition(" ")
    scheme_l = scheme.lower()
    rest = rest.strip()
    if scheme_l == "basic" and rest:
        pair = _decode_basic(rest)
        if pair is None:
            return Problem(reasons.MALFORMED_CREDENTIAL, channel)
        username, secret = pair
        if not secret:
            return Problem(reasons.MALFORMED_CREDENTIAL, channel)
        return Presented(channel, header, secret, username)
    if scheme_l == "bearer" and rest:
        if any(c.isspace() for c in rest):
            return Problem(reasons.MALFORMED_CREDENTIAL, channel)
        return Presented(channel, header, rest)
    if proxy_header:
        # Proxy-Authorization must name a scheme we understand.
        return Problem(reasons.MALFORMED_CREDENTIAL, channel)
    if any(c.isspace() for c in value):
        return Problem(reasons.MALFORMED_CREDENTIAL, channel)
    return Presented(channel, header, value)


def _decode_basic(text: str) -> tuple[str, str] | None:
    try:
        raw = base64.b64decode(text, validate=True)
        decoded = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    if ":" not in decoded:
        return None
    username, _, secret = decoded.partition(":")
    return username, secret
