"""Upstream OAuth tokens for an `oauth2_client_credentials` target credential.

The token is fetched on first use (RFC 6749 §4.4), cached, and refreshed
`refresh_skew` seconds before it expires. Every refresh is one request, no
matter how many requests wait for it (single-flight). When the endpoint
fails: a still-unexpired token keeps being used; otherwise callers get
`UpstreamTokenError`, which the glue answers with 502
upstream-credential-error. After a failure, the endpoint is not asked again
for `failure_backoff` seconds, so an outage is not amplified by traffic.

Nothing loggable holds the token: reprs omit it, errors carry fixed reasons.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import quote_plus

from rr_addon.core.inject import Injection, placeholder
from rr_addon.identity import (
    TOKEN_ENDPOINT_REFUSED,
    TOKEN_ENDPOINT_UNAVAILABLE,
    TOKEN,
    TOKEN_RESPONSE_INVALID,
    FetchError,
    Http,
    Shared,
    SingleFlight,
    check_endpoint_url,
    secret_digest,
)

logger = logging.getLogger(__name__)

_HEADER_SAFE = re.compile(r"[\x21-\x7e]{1,8192}")  # visible ASCII: nothing that could split a header
_ERROR_CODE = re.compile(r"[a-z_]{1,40}")


class UpstreamTokenError(Exception):
    """No upstream token can be had. `reason` is a fixed sentence; `detail`
    is short context safe to log (an HTTP status, an OAuth error code)."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason if detail is None else f"{reason} ({detail})")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class _Token:
    value: str = field(repr=False)
    refresh_at: float  # monotonic
    expires_at: float  # monotonic


_FLIGHT = "token"


class ClientCredentialsToken:
    """The current upstream access token of one target credential."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        http: Http,
        scope: str | None = None,
        audience: str | None = None,
        client_auth: str = "basic",
        refresh_skew: float = 60.0,
        default_ttl: float = 300.0,
        failure_backoff: float = 2.0,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if client_auth not in ("basic", "post"):
            raise ValueError("client_auth is 'basic' or 'post'")
        self.token_url = check_endpoint_url(token_url)
        self.client_id = client_id
        self.scope, self.audience = scope, audience
        self.requests = 0  # token requests sent, for tests and metrics
        self._secret = client_secret
        self._http = http
        self._client_auth = client_auth
        self._skew, self._default_ttl, self._backoff, self._timeout = refresh_skew, default_ttl, failure_backoff, timeout
        self._clock = clock
        self._token: _Token | None = None
        self._failed: tuple[float, UpstreamTokenError] | None = None  # (retry after, error)
        self._flight: SingleFlight[str, str] = SingleFlight()

    def __repr__(self) -> str:
        return f"ClientCredentialsToken({self.token_url!r}, client_id={self.client_id!r}, scope={self.scope!r})"

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
        try:
            value, ttl = await self._request()
        except UpstreamTokenError as e:
            self._http.failed(TOKEN)
            self._failed = (self._clock() + self._backoff, e)
            logger.warning("rr: upstream token for %s from %s: %s", self.client_id, self.token_url, e)
            return self._fallback(current, self._clock(), e)
        self._failed = None
        now = self._clock()
        # Refresh `skew` before expiry; a token shorter-lived than the skew is refreshed at half-life.
        self._token = _Token(value, now + max(ttl - self._skew, ttl / 2), now + ttl)
        return value

    @staticmethod
    def _fallback(current: _Token | None, now: float, error: UpstreamTokenError) -> str:
        if current is not None and now < current.expires_at:
            return current.value  # refresh failed, but the old token has not expired yet
        raise error

    async def _request(self) -> tuple[str, float]:
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        if self.audience:
            form["audience"] = self.audience
        auth = None
        if self._client_auth == "basic":
            auth = (quote_plus(self.client_id), quote_plus(self._secret))  # RFC 6749 §2.3.1
        else:
            form.update(client_id=self.client_id, client_secret=self._secret)
        try:
            response = await self._http.json("POST", self.token_url, data=form, auth=auth, timeout=self._timeout, purpose=TOKEN)
        except FetchError:
            raise UpstreamTokenError(TOKEN_ENDPOINT_UNAVAILABLE, "unreachable") from None
        body = response.body
        if response.status in (400, 401, 403):
            code = body.get("error") if isinstance(body, dict) else None
            code = code if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else None
            raise UpstreamTokenError(TOKEN_ENDPOINT_REFUSED, f"HTTP {response.status}" + (f" {code}" if code else ""))
        if response.status != 200:
            raise UpstreamTokenError(TOKEN_ENDPOINT_UNAVAILABLE, f"HTTP {response.status}")
        if not isinstance(body, dict):
            raise UpstreamTokenError(TOKEN_RESPONSE_INVALID, "not a JSON object")
        value, kind, expires_in = body.get("access_token"), body.get("token_type"), body.get("expires_in")
        if not isinstance(value, str) or not _HEADER_SAFE.fullmatch(value):
            raise UpstreamTokenError(TOKEN_RESPONSE_INVALID, "access_token missing or not header-safe")
        if kind is not None and (not isinstance(kind, str) or kind.lower() != "bearer"):
            raise UpstreamTokenError(TOKEN_RESPONSE_INVALID, "token_type is not Bearer")
        return value, _ttl(expires_in, self._default_ttl)


MAX_TTL = 86400.0  # refresh at least daily, whatever the server claims


def _ttl(expires_in: Any, default: float) -> float:
    if isinstance(expires_in, str) and expires_in.isascii() and expires_in.isdigit():
        expires_in = int(expires_in)  # some servers send a string
    if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)) or not expires_in > 0:
        return default  # RFC 6749: expires_in is only RECOMMENDED
    return float(expires_in) if expires_in < MAX_TTL else MAX_TTL


def build(cred: Any, *, client_secret: str, http: Http, shared: Shared | None = None) -> ClientCredentialsToken:
    """The token source of an `oauth2_client_credentials` target credential
    (rr_addon.policy.identity_schema.OAuth2ClientCredentials), shared across
    reloads so a new configuration keeps the current token."""

    def make() -> ClientCredentialsToken:
        return ClientCredentialsToken(
            cred.token_url,
            cred.client_id,
            client_secret,
            http=http,
            scope=cred.scope,
            audience=cred.audience,
            client_auth=cred.client_auth,
            refresh_skew=cred.refresh_skew,
            timeout=cred.timeout,
        )

    settings = (cred.scope, cred.audience, cred.client_auth, cred.refresh_skew, cred.timeout)
    key = ("client_credentials", cred.token_url, cred.client_id, secret_digest(client_secret), settings)
    return shared.obtain(key, make) if shared is not None else make()
