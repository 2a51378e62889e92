"""The upstream OAuth access token of one target credential, whatever the grant.

The token is fetched on first use, cached, and refreshed `refresh_skew`
seconds before it expires. It is used only while valid: its lifetime counts
from when the token request was sent, less a safety margin, so it cannot
expire on the way to the upstream. Every refresh is one request, however many
requests wait for it (single-flight). When the endpoint fails, a token that is
still valid keeps being used; otherwise callers get `UpstreamTokenError`
(502 upstream-auth-unavailable, or upstream-credential-error when the endpoint
refuses the credential). After a failure the endpoint is not asked again for
`failure_backoff` seconds, so an outage is not amplified by traffic.

What a grant sends (client_credentials, refresh_token, jwt-bearer) is a
`Grant` (rr_addon.identity.grants); how rr authenticates as a client is a
`ClientAuth`. Nothing loggable holds a token: reprs omit it, errors carry
fixed reasons.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from rr_addon.core.inject import Injection, placeholder
from rr_addon.identity import (
    TOKEN,
    TOKEN_ENDPOINT_REFUSED,
    TOKEN_ENDPOINT_UNAVAILABLE,
    TOKEN_RESPONSE_INVALID,
    FetchError,
    Http,
    SingleFlight,
    check_endpoint_url,
)
from rr_addon.identity.client_auth import ClientAuth

logger = logging.getLogger(__name__)

HEADER_SAFE = re.compile(r"[\x21-\x7e]{1,8192}")  # visible ASCII: nothing that could split a header
_ERROR_CODE = re.compile(r"[a-z_]{1,40}")

# What the caller sees (rr_addon.core.types.STATUS): the IdP cannot give a token
# now (down, erroring, garbled) versus the IdP refuses this credential (fix the configuration).
AUTH_UNAVAILABLE = "upstream-auth-unavailable"
CREDENTIAL_ERROR = "upstream-credential-error"

EXPIRY_MARGIN = 5.0  # seconds before its end a token stops being used (at most a tenth of its life)
MAX_TTL = 86400.0  # refresh at least daily, whatever the server claims


class UpstreamTokenError(Exception):
    """No upstream token can be had. `reason` is a fixed sentence; `detail`
    is short context safe to log (an HTTP status, an OAuth error code)."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason if detail is None else f"{reason} ({detail})")
        self.reason = reason
        self.detail = detail

    @property
    def code(self) -> str:
        return CREDENTIAL_ERROR if self.reason == TOKEN_ENDPOINT_REFUSED else AUTH_UNAVAILABLE


class Grant(Protocol):
    """What one token request asks for. `begin` returns the grant's form fields;
    `end` is always called after, with the JSON object of a successful answer
    (None when the request failed), e.g. to store a rotated refresh token."""

    name: str

    async def begin(self) -> dict[str, str]: ...

    async def end(self, answer: dict[str, Any] | None) -> None: ...


@dataclass(frozen=True, slots=True)
class _Token:
    value: str = field(repr=False)
    refresh_at: float  # monotonic
    expires_at: float  # monotonic, the safety margin already taken off


_FLIGHT = "token"


class UpstreamToken:
    """The current upstream access token of one target credential."""

    def __init__(
        self,
        token_url: str,
        grant: Grant,
        client: ClientAuth,
        *,
        http: Http,
        scope: str | None = None,
        audience: str | None = None,
        resource: str | None = None,
        refresh_skew: float = 60.0,
        default_ttl: float = 300.0,
        failure_backoff: float = 2.0,
        timeout: float = 10.0,
        label: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token_url = check_endpoint_url(token_url)
        self.grant, self.client = grant, client
        self.scope, self.audience, self.resource = scope, audience, resource
        self.label = label or client.client_id or grant.name
        self.requests = 0  # token requests sent, for tests and metrics
        self._http = http
        self._skew, self._default_ttl, self._backoff, self._timeout = refresh_skew, default_ttl, failure_backoff, timeout
        self._clock = clock
        self._token: _Token | None = None
        self._failed: tuple[float, UpstreamTokenError] | None = None  # (retry after, error)
        self._flight: SingleFlight[str, str] = SingleFlight()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.token_url!r}, {self.grant.name}, {self.label!r}, scope={self.scope!r})"

    def secrets(self) -> tuple[str, ...]:
        """What this source holds that a caller must never get sent anywhere (never logged)."""
        return tuple(s for s in (self.client.secret, getattr(self.grant, "seed", None)) if s)

    def token_nowait(self) -> str | None:
        """The token when it needs no refresh, else None: then await `token()`."""
        t = self._token
        return t.value if t is not None and self._clock() < t.refresh_at else None

    async def token(self) -> str:
        """The current token, refreshing it if due. Raises UpstreamTokenError."""
        value = self.token_nowait()
        if value is not None:
            return value
        return await self._flight.run(_FLIGHT, self._refresh)

    def injection(self, target: str, credential: str, token: str) -> Injection:
        """What to inject for this request: `Authorization: Bearer <token>` on
        the wire, the credential's placeholder on the flow."""
        ph = placeholder(target, credential)
        return Injection(f"{target}/{credential}", headers=(("Authorization", f"Bearer {token}", f"Bearer {ph}"),), secrets=(token,))

    async def _refresh(self) -> str:
        now = self._clock()
        current = self._token
        if current is not None and now < current.refresh_at:
            return current.value  # refreshed while this caller was being scheduled
        if self._failed is not None and now < self._failed[0]:
            return self._fallback(current, now, self._failed[1])
        self.requests += 1
        sent = self._clock()  # the token's life counts from here: the answer may be slow
        try:
            value, ttl = await self._request()
        except UpstreamTokenError as e:
            self._http.failed(TOKEN)
            self._failed = (self._clock() + self._backoff, e)
            logger.warning("rr: upstream token (%s) for %s from %s: %s", self.grant.name, self.label, self.token_url, e)
            return self._fallback(current, self._clock(), e)
        self._failed = None
        expires = sent + ttl - min(EXPIRY_MARGIN, ttl / 10)
        # Refresh `skew` before expiry; a token shorter-lived than the skew is refreshed at half-life.
        self._token = _Token(value, min(sent + max(ttl - self._skew, ttl / 2), expires), expires)
        return value

    @staticmethod
    def _fallback(current: _Token | None, now: float, error: UpstreamTokenError) -> str:
        if current is not None and now < current.expires_at:
            return current.value  # refresh failed, but the old token is still valid
        raise error

    async def _request(self) -> tuple[str, float]:
        form = await self.grant.begin()
        answer: dict[str, Any] | None = None
        try:
            if self.scope:
                form["scope"] = self.scope
            if self.audience:
                form["audience"] = self.audience
            if self.resource:
                form["resource"] = self.resource  # RFC 8707
            auth = self.client.apply(form, self.token_url)
            try:
                response = await self._http.json("POST", self.token_url, data=form, auth=auth, timeout=self._timeout, purpose=TOKEN)
            except FetchError:
                raise UpstreamTokenError(TOKEN_ENDPOINT_UNAVAILABLE, "unreachable") from None
            value, ttl = _parse(response.status, response.body, self._default_ttl)
            answer = response.body
            return value, ttl
        finally:
            await self.grant.end(answer)


def _parse(status: int, body: Any, default_ttl: float) -> tuple[str, float]:
    if status in (400, 401, 403):
        code = body.get("error") if isinstance(body, dict) else None
        code = code if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else None
        raise UpstreamTokenError(TOKEN_ENDPOINT_REFUSED, f"HTTP {status}" + (f" {code}" if code else ""))
    if status != 200:
        raise UpstreamTokenError(TOKEN_ENDPOINT_UNAVAILABLE, f"HTTP {status}")
    if not isinstance(body, dict):
        raise UpstreamTokenError(TOKEN_RESPONSE_INVALID, "not a JSON object")
    value, kind, expires_in = body.get("access_token"), body.get("token_type"), body.get("expires_in")
    if not isinstance(value, str) or not HEADER_SAFE.fullmatch(value):
        raise UpstreamTokenError(TOKEN_RESPONSE_INVALID, "access_token missing or not header-safe")
    if kind is not None and (not isinstance(kind, str) or kind.lower() != "bearer"):
        raise UpstreamTokenError(TOKEN_RESPONSE_INVALID, "token_type is not Bearer")
    return value, _ttl(expires_in, default_ttl)


def _ttl(expires_in: Any, default: float) -> float:
    if isinstance(expires_in, str) and expires_in.isascii() and expires_in.isdigit():
        expires_in = int(expires_in)  # some servers send a string
    if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)) or not expires_in > 0:
        return default  # RFC 6749: expires_in is only RECOMMENDED
    return float(expires_in) if expires_in < MAX_TTL else MAX_TTL
