"""The OAuth grants rr uses to obtain upstream access tokens.

  client_credentials  RFC 6749 §4.4: the client's own access
  refresh_token       RFC 6749 §6: a stored refresh token, e.g. a user's
                      delegated access; rotated refresh tokens are kept
  jwt-bearer          RFC 7523 §2.1: an assertion signed with a private key,
                      e.g. a Google service account

Refresh-token rotation: an IdP that rotates answers each refresh with a new
refresh token and invalidates the old one (many treat reuse of the old one as
theft and revoke the whole family). So the newest refresh token must reach
every data plane and survive restarts, and no two data planes may spend the
same one. A `RefreshTokenStore` gives exactly that: `lease` hands out the
newest token to one data plane at a time (the others wait for the lease and
then read the token it stored), `save` stores the rotated token and ends the
lease (rr_addon.store.oauth_grants keeps them encrypted in the configuration
database; `MemoryRefreshTokens` is the store of a single process).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from typing import Any, Callable, Hashable, Protocol

from rr_addon.identity import TOKEN_ENDPOINT_UNAVAILABLE, TOKEN_RESPONSE_INVALID
from rr_addon.identity.client_auth import SigningKey, load_signing_key, sign
from rr_addon.identity.upstream_token import HEADER_SAFE, UpstreamTokenError

logger = logging.getLogger(__name__)

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME = 300  # seconds (Google accepts at most 3600)


class ClientCredentialsGrant:
    name = "client_credentials"

    async def begin(self) -> dict[str, str]:
        return {"grant_type": "client_credentials"}

    async def end(self, answer: dict[str, Any] | None) -> None:
        pass


# ---------------------------------------------------------------- refresh tokens
class RefreshTokenStore(Protocol):
    async def lease(self, key: Hashable, seed: str, seconds: float) -> tuple[str, int] | None:
        """The newest refresh token of `key` and its generation, leased to this
        process for `seconds`; None while another data plane holds the lease.
        `seed` is the configured token: it replaces the stored one when it is new."""

    async def save(self, key: Hashable, generation: int, token: str) -> bool:
        """Store a rotated token (generation + 1) and end the lease. False if
        this process no longer held the lease at `generation`."""

    async def release(self, key: Hashable) -> None: ...


class MemoryRefreshTokens:
    """One process's refresh tokens (tests, and `rr apply` building sources it never uses)."""

    def __init__(self) -> None:
        self._tokens: dict[Hashable, tuple[str, str, int]] = {}  # key -> (seed, token, generation)

    async def lease(self, key: Hashable, seed: str, seconds: float) -> tuple[str, int] | None:
        known = self._tokens.get(key)
        if known is None or known[0] != seed:
            known = self._tokens[key] = (seed, seed, 0 if known is None else known[2] + 1)
        return known[1], known[2]

    async def save(self, key: Hashable, generation: int, token: str) -> bool:
        seed, _, current = self._tokens[key]
        if current != generation:
            return False
        self._tokens[key] = (seed, token, generation + 1)
        return True

    async def release(self, key: Hashable) -> None:
        pass


class RefreshTokenGrant:
    """RFC 6749 §6. Leases the newest refresh token from `store` for the
    length of one token request; a new refresh token in the answer is saved."""

    name = "refresh_token"

    def __init__(
        self,
        key: Hashable,
        refresh_token: str,
        store: RefreshTokenStore,
        *,
        lease_seconds: float,
        wait: float,
        poll: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._key, self.seed, self._store = key, refresh_token, store
        self._lease_seconds, self._wait, self._poll, self._clock = lease_seconds, wait, poll, clock
        self._leased: tuple[str, int, bool] | None = None  # (token, generation, not yet stored)
        # A rotated token the store could not take (the database was down): this
        # process spends it next, as long as nobody stored a newer generation.
        self._unsaved: tuple[str, int] | None = None

    def __repr__(self) -> str:
        return f"RefreshTokenGrant({self._key!r})"

    async def begin(self) -> dict[str, str]:
        deadline = self._clock() + self._wait
        while True:
            try:
                got = await self._store.lease(self._key, self.seed, self._lease_seconds)
            except Exception as e:  # the store is the database: fail closed rather than spend a stale token
                logger.error("rr: refresh token store unavailable for %s: %s", self._key, type(e).__name__)
                raise UpstreamTokenError(TOKEN_ENDPOINT_UNAVAILABLE, "refresh token store unavailable") from None
            if got is not None:
                break
            if self._clock() >= deadline:
                raise UpstreamTokenError(TOKEN_ENDPOINT_UNAVAILABLE, "refresh token leased by another data plane")
            await asyncio.sleep(self._poll)  # another data plane is refreshing: its rotated token is read next
        unsaved, self._unsaved = self._unsaved, None
        if unsaved is not None and unsaved[1] == got[1]:
            got = unsaved  # newer than what is stored: the IdP has already retired the stored one
        self._leased = (got[0], got[1], got is unsaved)
        return {"grant_type": "refresh_token", "refresh_token": got[0]}

    async def end(self, answer: dict[str, Any] | None) -> None:
        leased, self._leased = self._leased, None
        if leased is None:
            return
        new = answer.get("refresh_token") if answer is not None else None
        if (new is None or new == leased[0]) and leased[2]:
            new = leased[0]  # not rotated this time, but what was spent must reach the store
        try:
            if new is None or (new == leased[0] and not leased[2]):
                await self._store.release(self._key)
                return
            if not isinstance(new, str) or not HEADER_SAFE.fullmatch(new):
                await self._store.release(self._key)
                raise UpstreamTokenError(TOKEN_RESPONSE_INVALID, "refresh_token not a usable string")
            if not await self._store.save(self._key, leased[1], new):
                logger.error("rr: rotated refresh token for %s not stored: the lease had passed to another data plane", self._key)
        except UpstreamTokenError:
            raise
        except Exception as e:
            # The access token is good; the rotated refresh token is kept in memory and stored with the next refresh.
            logger.error("rr: rotated refresh token for %s not stored (%s): kept in memory until the store answers", self._key, type(e).__name__)
            self._unsaved = (new, leased[1])


# ---------------------------------------------------------------- JWT bearer assertions
class JwtBearerGrant:
    """RFC 7523 §2.1: a fresh assertion per token request (iss, sub, aud, iat,
    exp, jti). `scope_claim`: Google service accounts take the scopes as a claim."""

    name = "jwt_bearer"

    def __init__(
        self,
        key: SigningKey,
        *,
        issuer: str,
        subject: str,
        audience: str,
        scope_claim: str | None = None,
        lifetime: int = ASSERTION_LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key, self.issuer, self.subject, self.audience = key, issuer, subject, audience
        self._scope_claim, self._lifetime, self._clock = scope_claim, lifetime, clock

    def __repr__(self) -> str:
        return f"JwtBearerGrant(issuer={self.issuer!r}, subject={self.subject!r})"

    def assertion(self) -> str:
        now = int(self._clock())
        claims = {"iss": self.issuer, "sub": self.subject, "aud": self.audience, "iat": now, "exp": now + self._lifetime, "jti": secrets.token_urlsafe(18)}
        if self._scope_claim:
            claims["scope"] = self._scope_claim
        return sign(self._key, claims)

    async def begin(self) -> dict[str, str]:
        return {"grant_type": JWT_BEARER, "assertion": self.assertion()}

    async def end(self, answer: dict[str, Any] | None) -> None:
        pass


class ServiceAccount:
    """The fields rr uses from a Google service-account key file."""

    def __init__(self, client_email: str, private_key: SigningKey, token_uri: str | None) -> None:
        self.client_email, self.private_key, self.token_uri = client_email, private_key, token_uri

    def __repr__(self) -> str:
        return f"ServiceAccount({self.client_email!r})"


def parse_service_account(text: str) -> ServiceAccount:
    """Raises ValueError with a sentence that never repeats the key."""
    try:
        doc = json.loads(text)
    except ValueError:
        raise ValueError("the service account is not JSON (give the key file Google issued)") from None
    if not isinstance(doc, dict) or doc.get("type") != "service_account":
        raise ValueError('the service account JSON needs "type": "service_account"')
    email, pem, kid, uri = doc.get("client_email"), doc.get("private_key"), doc.get("private_key_id"), doc.get("token_uri")
    if not isinstance(email, str) or not email:
        raise ValueError('the service account JSON has no "client_email"')
    if not isinstance(pem, str) or not pem:
        raise ValueError('the service account JSON has no "private_key"')
    if kid is not None and not isinstance(kid, str):
        raise ValueError('the service account JSON\'s "private_key_id" is not a string')
    if uri is not None and not isinstance(uri, str):
        raise ValueError('the service account JSON\'s "token_uri" is not a string')
    key = load_signing_key(pem, algorithm="RS256", key_id=kid or None, what="service account's private_key")
    return ServiceAccount(email, key, uri)
