"""Verification keys: parsed once into key objects, selected by `kid` and `alg`.

A key fits an algorithm only when its *type* does (RSA for RS*/PS*, the
named curve for ES*, OKP for EdDSA, a symmetric secret for HS*), so an
HS256 token naming an RSA key is refused whatever the allow-list says: the
RS/HS confusion cannot happen by construction.

`RemoteJwks` caches a JWKS endpoint without blocking the request path:
lookups are sync and never do I/O; a miss returns None and the caller awaits
`refresh()`, which concurrent callers share. Cache-Control max-age is
honoured within bounds; an unknown kid refetches at most once per
`refetch_interval` (a fetch that never reached the endpoint does not use
up that slot: another may go after `NOT_SENT_RETRY`); keys survive an endpoint outage; a key that disappears
from the set stays usable until the max-age of the fetch that last listed it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from jwt.algorithms import Algorithm, get_default_algorithms

from rr_addon.identity import (
    JWKS,
    KEYS_UNAVAILABLE,
    PATH_HMAC,
    PATH_INLINE_JWKS,
    PATH_JWKS,
    UNKNOWN_KID,
    FetchError,
    Http,
    NotSent,
    SingleFlight,
    check_endpoint_url,
)

from rr_addon.policy.identity import (  # noqa: F401  (parsing is pure: the policy language checks inline JWKS with it)
    ALG_FAMILY,
    HMAC_ALGORITHMS,
    HMAC_MIN_BYTES,
    MIN_RSA_BITS,
    SUPPORTED_ALGORITHMS,
    JwksSettings,
    Key,
    KeySet,
    Miss,
    key_from_jwk,
    parse_jwks,
    pick,
)

logger = logging.getLogger(__name__)

# PyJWT's algorithm objects, created once; `verify(msg, key_object, sig)`.
VERIFIERS: Mapping[str, Algorithm] = {a: o for a, o in get_default_algorithms().items() if a in ALG_FAMILY}


class StaticKeys:
    """Keys known from the configuration: an inline JWKS or an HMAC secret."""

    def __init__(self, keys: KeySet, path: str, *, ignore_kid: bool = False) -> None:
        self.keys = keys
        self.path = path
        self._ignore_kid = ignore_kid  # a lone HMAC secret has no kid namespace

    def lookup(self, kid: str | None, alg: str, *, allow_fetch: bool = True) -> Key | Miss:
        return self.keys.select(None if self._ignore_kid else kid, alg)

    async def refresh(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"StaticKeys({self.path}, {len(self.keys)} keys)"


def inline_keys(doc: Any) -> StaticKeys:
    return StaticKeys(parse_jwks(doc, allow_symmetric=False), PATH_INLINE_JWKS)


def hmac_keys(secret: str, algorithms: Iterable[str]) -> StaticKeys:
    """Raises ValueError when the secret is shorter than an allowed HS* algorithm requires."""
    raw = secret.encode("utf-8")
    for alg in algorithms:
        if alg not in HMAC_ALGORITHMS:
            raise ValueError(f"algorithm {alg} cannot be verified with an HMAC secret")
        if len(raw) < HMAC_MIN_BYTES[alg]:
            raise ValueError(f"an HMAC secret for {alg} must be at least {HMAC_MIN_BYTES[alg]} bytes")
    return StaticKeys(KeySet([Key(None, "oct", raw)]), PATH_HMAC, ignore_kid=True)


# ---------------------------------------------------------------- remote JWKS


def cache_ttl(headers: Mapping[str, str], s: JwksSettings) -> float:
    """`headers`: case-insensitive (httpx.Headers) or with lower-case names."""
    ttl = s.default_ttl
    for directive in headers.get("cache-control", "").lower().split(","):
        name, _, value = directive.strip().partition("=")
        if name in ("no-store", "no-cache"):
            ttl = s.min_ttl
            break
        if name == "max-age":
            try:
                ttl = float(int(value.strip().strip('"')))
            except ValueError:
                pass
    return min(max(ttl, s.min_ttl), s.max_ttl)


@dataclass(frozen=True, slots=True)
class _State:
    latest: KeySet
    fresh_until: float  # monotonic: refetch in the background after this
    retired: Mapping[str, tuple[tuple[Key, ...], float]] = field(default_factory=dict)  # kid -> (keys, usable until)

    def select(self, kid: str | None, alg: str, now: float) -> Key | Miss:
        found = self.latest.select(kid, alg)
        if isinstance(found, Miss) and found.reason == UNKNOWN_KID and kid is not None:
            old = self.retired.get(kid)
            if old is not None and old[1] > now:
                return pick(old[0], kid, alg)
        return found


_FLIGHT = "jwks"
NOT_SENT_RETRY = 1.0  # seconds: after a fetch that never left, the next may go this soon


class RemoteJwks:
    """A JWKS endpoint's keys, cached. See the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        http: Http,
        settings: JwksSettings = JwksSettings(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = check_endpoint_url(url)
        self.path = PATH_JWKS
        self.settings = settings
        self.fetches = 0  # attempts, for tests and metrics
        self._http = http
        self._clock = clock
        self._state: _State | None = None
        self._last_attempt: float | None = None  # any fetch
        self._last_kid_refetch: float | None = None  # a fetch for an unknown kid
        self._failing = False
        self._flight: SingleFlight[str, None] = SingleFlight()

    def __repr__(self) -> str:
        return f"RemoteJwks({self.url!r})"

    @property
    def ready(self) -> bool:
        return self._state is not None

    def lookup(self, kid: str | None, alg: str, *, allow_fetch: bool = True) -> Key | Miss | None:
        """The key, a Miss, or None when a fetch is due: await `refresh()`,
        then ask again with allow_fetch=False."""
        now = self._clock()
        state = self._state
        if state is None:
            if allow_fetch and self._may_fetch(now, self._last_attempt):
                return None
            return Miss(KEYS_UNAVAILABLE, "the JWKS endpoint gave no usable keys yet")
        if now >= state.fresh_until and self._may_fetch(now, self._last_attempt):
            self._refresh_in_background()  # stale-while-revalidate: this request uses the cached keys
        found = state.select(kid, alg, now)
        if (
            allow_fetch
            and isinstance(found, Miss)
            and found.reason == UNKNOWN_KID
            and kid is not None
            and self._may_fetch(now, self._last_kid_refetch)
        ):
            return None
        return found

    async def refresh(self) -> None:
        """Fetch after a miss, or join the running fetch. Rate-limited: with no
        keys yet, one attempt per `refetch_interval`; with keys (an unknown
        kid), one refetch per `refetch_interval`, however recent the last
        scheduled fetch — so a rotation is picked up at once."""
        now = self._clock()
        if self._state is None:
            if not self._may_fetch(now, self._last_attempt):
                return
        elif not self._may_fetch(now, self._last_kid_refetch):
            return
        elif not self._flight.running(_FLIGHT):
            self._last_kid_refetch = now
        await self._flight.run(_FLIGHT, self._fetch)

    async def prewarm(self) -> bool:
        if self._state is None:
            await self.refresh()
        return self.ready

    def _may_fetch(self, now: float, last: float | None) -> bool:
        if self._flight.running(_FLIGHT):
            return True  # joining costs the endpoint nothing
        return last is None or now - last >= self.settings.refetch_interval

    def _refresh_in_background(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (e.g. `rr explain`): keep the cached keys
        self._flight.start(_FLIGHT, self._fetch)

    async def _fetch(self) -> None:
        self._last_attempt = self._clock()
        self.fetches += 1
        try:
            response = await self._http.json("GET", self.url, timeout=self.settings.timeout, purpose=JWKS)
            if response.status != 200:
                raise FetchError(f"GET {self.url}: HTTP {response.status}")
            keys = parse_jwks(response.body, allow_symmetric=False)
        except (FetchError, ValueError) as e:
            self._http.failed(JWKS)
            if isinstance(e, NotSent):
                self._refund()
            if not self._failing:
                kept = f"keeping {len(self._state.latest)} cached keys" if self._state else "no keys cached"
                logger.warning("rr: JWKS fetch failed (%s); %s", e, kept)
            self._failing = True
            return
        except Exception:
            self._http.failed(JWKS)
            logger.exception("rr: JWKS fetch from %s failed unexpectedly", self.url)
            self._failing = True
            return
        if self._failing:
            logger.info("rr: JWKS endpoint %s answers again", self.url)
        self._failing = False
        now = self._clock()
        self._state = _merge(self._state, keys, now, now + cache_ttl(response.headers, self.settings))


    def _refund(self) -> None:
        """The endpoint never saw the fetch (our side could not connect in
        time): let the next one go soon instead of after `refetch_interval`."""
        soon = self._clock() - self.settings.refetch_interval + NOT_SENT_RETRY
        if self._last_kid_refetch is not None:
            self._last_kid_refetch = min(self._last_kid_refetch, soon)
        if self._last_attempt is not None:
            self._last_attempt = min(self._last_attempt, soon)


def _merge(old: _State | None, keys: KeySet, now: float, fresh_until: float) -> _State:
    """The new set; kids that vanished stay until the max-age of the fetch that last listed them."""
    if old is None:
        return _State(keys, fresh_until)
    retired = {kid: v for kid, v in old.retired.items() if v[1] > now and kid not in keys.by_kid}
    if old.fresh_until > now:
        for kid, ks in old.latest.by_kid.items():
            if kid is not None and kid not in keys.by_kid:
                retired[kid] = (ks, old.fresh_until)
    return _State(keys, fresh_until, retired)
