"""OAuth 2.0 access tokens for an `oauth2` credential: RFC 7662 introspection,
or (RFC 9068) local verification of JWT access tokens through a JWKS.

Introspection answers are cached by a keyed hash of the token, never the
token: active answers until the token's `exp` (at most `max_ttl`), inactive
ones for `negative_ttl`. Endpoint failures are not cached and never allow:
they refuse with INTROSPECTION_UNAVAILABLE. Concurrent requests carrying the
same uncached token share one introspection request; a new one needs a slot
of the shared `Gate` (overall and per client address), else it is refused at
once with INTROSPECTION_BUSY.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping
from urllib.parse import quote_plus

from rr_addon.identity import (
    INACTIVE,
    INTROSPECTION,
    INTROSPECTION_BUSY,
    INTROSPECTION_UNAVAILABLE,
    MALFORMED_TOKEN,
    PATH_INTROSPECTION,
    FetchError,
    Http,
    Refused,
    Shared,
    SingleFlight,
    Verified,
    check_endpoint_url,
    secret_digest,
    token_key,
)
from rr_addon.identity.gate import CLIENT, Gate
from rr_addon.identity.jwt_verify import (
    ACCESS_TOKEN_TYPES,
    ClaimRules,
    JwtVerifier,
    ParsedToken,
    build_keys,
    numeric_date,
    parse,
    verified,
)

logger = logging.getLogger(__name__)

Answer = Mapping[str, Any] | Refused  # the active response's members, or why not


@dataclass(frozen=True, slots=True)
class _Entry:
    answer: Answer
    until: float  # monotonic


class Introspector:
    """One introspection endpoint with its client credentials, and its cache."""

    def __init__(
        self,
        url: str,
        client_id: str,
        client_secret: str,
        *,
        http: Http,
        client_auth: str = "basic",
        max_ttl: float = 60.0,
        negative_ttl: float = 10.0,
        timeout: float = 5.0,
        max_entries: int = 10000,
        gate: Gate | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if client_auth not in ("basic", "post"):
            raise ValueError("client_auth is 'basic' or 'post'")
        self.url = check_endpoint_url(url)
        self.client_id = client_id
        self.requests = 0  # introspection requests sent, for tests and metrics
        self._secret = client_secret
        self._http = http
        self._client_auth = client_auth
        self._max_ttl, self._negative_ttl, self._timeout = max_ttl, negative_ttl, timeout
        self._max_entries = max_entries
        self._gate = gate
        self._clock, self._wall = clock, wall
        self._cache: dict[bytes, _Entry] = {}
        self._flight: SingleFlight[bytes, Answer] = SingleFlight()
        self._failing = False

    def __repr__(self) -> str:
        return f"Introspector({self.url!r}, client_id={self.client_id!r})"

    def cached(self, token: str) -> Answer | None:
        """The cached answer, or None: then await `introspect`."""
        return self._hit(token_key(token))

    async def introspect(self, token: str) -> Answer:
        key = token_key(token)
        hit = self._hit(key)
        if hit is not None:
            return hit
        if self._gate is None or self._flight.running(key):
            return await self._flight.run(key, lambda: self._ask(key, token))  # joining costs the endpoint nothing
        client = CLIENT.get()
        if not self._gate.enter(client):
            return Refused(INTROSPECTION_BUSY, PATH_INTROSPECTION, "retry shortly")
        task = self._flight.start(key, lambda: self._ask(key, token))
        # the slot is held until the endpoint answers, even if this caller goes away
        task.add_done_callback(lambda _: self._gate.leave(client))  # type: ignore[union-attr]
        return await asyncio.shield(task)

    def _hit(self, key: bytes) -> Answer | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        if self._clock() >= entry.until:
            self._cache.pop(key, None)
            return None
        return entry.answer

    async def _ask(self, key: bytes, token: str) -> Answer:
        self.requests += 1
        form = {"token": token, "token_type_hint": "access_token"}
        auth = None
        if self._client_auth == "basic":
            auth = (quote_plus(self.client_id), quote_plus(self._secret))  # RFC 6749 §2.3.1 form-encodes both
        else:
            form.update(client_id=self.client_id, client_secret=self._secret)
        try:
            response = await self._http.json("POST", self.url, data=form, auth=auth, timeout=self._timeout, purpose=INTROSPECTION)
            if response.status != 200:
                raise FetchError(f"POST {self.url}: HTTP {response.status}")
            if not isinstance(response.body, dict):
                raise FetchError(f"POST {self.url}: the answer is not a JSON object")
        except FetchError as e:
            self._http.failed(INTROSPECTION)
            if not self._failing:
                logger.warning("rr: token introspection failed (%s); refusing tokens it cannot vouch for", e)
            self._failing = True
            return Refused(INTROSPECTION_UNAVAILABLE, PATH_INTROSPECTION, "no usable answer from the endpoint")
        if self._failing:
            logger.info("rr: introspection endpoint %s answers again", self.url)
        self._failing = False
        body = response.body
        if body.get("active") is not True:
            answer: Answer = Refused(INACTIVE, PATH_INTROSPECTION)
            ttl = self._negative_ttl
        else:
            answer = MappingProxyType(body)
            ttl = self._max_ttl
            exp = numeric_date(body.get("exp"))
            if exp is not None:
                ttl = min(ttl, exp - self._wall())
        if ttl > 0:
            self._store(key, _Entry(answer, self._clock() + ttl))
        return answer

    def _store(self, key: bytes, entry: _Entry) -> None:
        if len(self._cache) >= self._max_entries:
            del self._cache[next(iter(self._cache))]  # oldest first; bounded memory under junk tokens
        self._cache[key] = entry


class OAuth2Verifier:
    """An `oauth2` credential: introspection and/or local RFC 9068 verification.

    With both, a JWT whose (unverified) issuer is the configured one is
    verified locally; anything else is introspected."""

    def __init__(
        self,
        *,
        rules: ClaimRules,
        introspector: Introspector | None = None,
        jwt: JwtVerifier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if introspector is None and jwt is None:
            raise ValueError("an oauth2 credential needs introspection_url or a JWKS")
        self.rules = rules
        self.introspector = introspector
        self.jwt = jwt
        self._clock = clock

    @property
    def path(self) -> str:
        return PATH_INTROSPECTION if self.introspector is not None else self.jwt.path  # type: ignore[union-attr]

    def __repr__(self) -> str:
        return f"OAuth2Verifier(introspector={self.introspector!r}, jwt={self.jwt!r})"

    def _local(self, token: str, parsed: ParsedToken | None) -> ParsedToken | None:
        if self.jwt is None:
            return None
        parsed = parsed or parse(token)
        if parsed is None or (self.introspector is not None and parsed.claims.get("iss") != self.jwt.rules.issuer):
            return None
        return parsed

    def verify_cached(self, token: str, now: float | None = None, *, parsed: ParsedToken | None = None) -> Verified | Refused | None:
        """The result, or None when an introspection request is due (then await `verify`)."""
        parsed = self._local(token, parsed)
        if parsed is not None:
            return self.jwt.verify_cached(parsed, now)  # type: ignore[union-attr]
        if self.introspector is None:
            return Refused(MALFORMED_TOKEN, self.path, "not a JWT access token")
        answer = self.introspector.cached(token)
        return None if answer is None else self._judge(answer, now)

    async def verify(self, token: str, now: float | None = None, *, parsed: ParsedToken | None = None) -> Verified | Refused:
        parsed = self._local(token, parsed)
        if parsed is not None:
            return await self.jwt.verify(parsed, now)  # type: ignore[union-attr]
        if self.introspector is None:
            return Refused(MALFORMED_TOKEN, self.path, "not a JWT access token")
        return self._judge(await self.introspector.introspect(token), now)

    async def prewarm(self) -> bool:
        return await self.jwt.prewarm() if self.jwt is not None else True

    def _judge(self, answer: Answer, now: float | None) -> Verified | Refused:
        if isinstance(answer, Refused):
            return answer
        failed = self.rules.check(answer, self._clock() if now is None else now)
        if failed is not None:
            return Refused(failed[0], PATH_INTROSPECTION, failed[1])
        return verified(answer, PATH_INTROSPECTION)


def build(cred: Any, *, client_secret: str | None, http: Http, shared: Shared | None = None, gate: Gate | None = None) -> OAuth2Verifier:
    """A verifier for an `oauth2` credential (rr_addon.policy.identity_schema.OAuth2Caller).
    Introspectors and JWKS caches are shared across reloads. Raises ValueError."""
    introspector = None
    if cred.introspection_url is not None:
        if client_secret is None:
            raise ValueError("introspection needs the resolved client_secret")
        secret = client_secret

        def make() -> Introspector:
            return Introspector(
                cred.introspection_url,
                cred.client_id,
                secret,
                http=http,
                client_auth=cred.client_auth,
                max_ttl=cred.cache_max_ttl,
                negative_ttl=cred.negative_ttl,
                timeout=cred.timeout,
                gate=gate,
            )

        # Only what shapes the answers and the cache: credentials that differ in
        # audience or scopes share one cache, so a token is introspected once.
        settings = (cred.client_auth, cred.cache_max_ttl, cred.negative_ttl, cred.timeout)
        key = ("introspection", cred.introspection_url, cred.client_id, secret_digest(secret), settings)
        introspector = shared.obtain(key, make) if shared is not None else make()
    jwt = None
    if cred.jwks_url is not None or cred.jwks is not None:
        keys = build_keys(
            jwks_url=cred.jwks_url,
            jwks=cred.jwks,
            secret=None,
            algorithms=cred.algorithms,
            settings=cred.jwks_cache.settings(),
            http=http,
            shared=shared,
        )
        jwt_rules = ClaimRules(
            issuer=cred.issuer,
            audience=cred.audience,
            required_claims=cred.required_claims,
            leeway=cred.leeway,
            scopes=cred.scopes,
        )
        jwt = JwtVerifier(keys=keys, algorithms=cred.algorithms, rules=jwt_rules, token_types=ACCESS_TOKEN_TYPES)
    rules = ClaimRules(
        issuer=cred.issuer,
        audience=cred.audience,
        required_claims=cred.required_claims,
        leeway=cred.leeway,
        require_exp=False,  # RFC 7662: exp is optional; `active` is what the server vouches for
        scopes=cred.scopes,
    )
    return OAuth2Verifier(rules=rules, introspector=introspector, jwt=jwt)
