"""Verified caller identities (JWT, OAuth 2.0) and OAuth upstream tokens.

Shared pieces of the package: the fixed reason sentences, the result values,
an HTTP client that never blocks the event loop, single-flight, and the
endpoint-URL policy. Nothing here holds a raw token longer than a call.

Request-path contract for the glue: every verifier offers
`verify_cached(token) -> Verified | Refused | None` (sync, no I/O; None means
"keys or an introspection answer must be fetched first") and
`async verify(token) -> Verified | Refused` (awaits that fetch, shared with
every concurrent caller).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Generic, Hashable, Mapping, TypeVar
from urllib.parse import urlsplit


if TYPE_CHECKING:
    import httpx

# Reasons: the fixed sentences of token verification live with every other sentence rr says.
from rr_addon.core.reasons import (  # noqa: E402,F401
    EXPIRED,
    NOT_YET_VALID,
    BAD_SIGNATURE,
    WRONG_ISSUER,
    WRONG_AUDIENCE,
    UNKNOWN_KID,
    ALGORITHM_NOT_ALLOWED,
    MALFORMED_TOKEN,
    CLAIM_MISSING,
    CLAIM_INVALID,
    KEYS_UNAVAILABLE,
    WRONG_TOKEN_TYPE,
    INACTIVE,
    INTROSPECTION_UNAVAILABLE,
    INTROSPECTION_BUSY,
    INSUFFICIENT_SCOPE,
    NO_MATCHING_CREDENTIAL,
    AMBIGUOUS_MATCH,
    TOKEN_ENDPOINT_UNAVAILABLE,
    TOKEN_ENDPOINT_REFUSED,
    TOKEN_RESPONSE_INVALID,
)

# ---------------------------------------------------------------- verification paths
PATH_JWKS = "jwks"
PATH_INLINE_JWKS = "inline jwks"
PATH_HMAC = "hmac"
PATH_INTROSPECTION = "introspection"
PATH_MATCH = "match"  # refused before any verifier ran


@dataclass(frozen=True, slots=True)
class Verified:
    """A token that passed every check. `claims` feeds the rules' `claims:` matcher."""

    claims: Mapping[str, Any]
    path: str
    issuer: str | None
    subject: str | None
    expires_at: float | None  # epoch seconds (the token's exp), None when it has none

    def audit(self) -> dict[str, str | None]:
        return {"subject": self.subject, "issuer": self.issuer, "verification": self.path}


@dataclass(frozen=True, slots=True)
class Refused:
    """A token that failed. `reason` is one of the constants above; `detail` is
    short context (a claim name, an algorithm), never token material."""

    reason: str
    path: str
    detail: str | None = None

    def audit(self) -> dict[str, str | None]:
        return {"verification": self.path, "reason": self.reason, "detail": self.detail}


Result = Verified | Refused


from rr_addon.policy.identity import check_endpoint_url  # noqa: E402,F401  (pure: the policy language checks URLs with it)


# ---------------------------------------------------------------- token keys
# Caches are keyed by a keyed hash of the token, never the token: a memory
# dump or a debugger shows digests that cannot be replayed or guessed offline.
_PROCESS_KEY = os.urandom(32)


def token_key(token: str) -> bytes:
    return hmac.new(_PROCESS_KEY, token.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()


# ---------------------------------------------------------------- HTTP
MAX_RESPONSE_BYTES = 1 << 20


class FetchError(Exception):
    """An identity-provider endpoint could not give a usable answer. The
    message is safe to log (no token, no secret)."""


class NotSent(FetchError):
    """The request never reached the endpoint (no connection, or none free in
    time): a rate-limited retry slot must not be spent on it."""


@dataclass(frozen=True, slots=True)
class JsonResponse:
    status: int
    headers: Mapping[str, str]  # case-insensitive (httpx.Headers)
    body: Any  # parsed JSON, or None when the body was not JSON


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN/Infinity would break exp and expires_in arithmetic


# Fetch purposes. Each (purpose, endpoint origin) gets its own connection pool,
# so a flood of introspections can never take the connections a JWKS refresh
# or an upstream-token refresh needs.
JWKS = "jwks"
INTROSPECTION = "introspection"
TOKEN = "token"
LANE_CONNECTIONS: Mapping[str, int] = {JWKS: 4, INTROSPECTION: 16, TOKEN: 4}
_SENT = ("http11.send_request_headers.started", "http2.send_request_headers.started")


class Http:
    """httpx.AsyncClients per event loop, one per (purpose, endpoint origin),
    created on first use.

    Ignores HTTP(S)_PROXY from the environment (trust_env=False): rr may run
    with those pointing at itself. Redirects are not followed: an identity
    endpoint that redirects is misconfigured, and following could leak a
    client secret to another host. For a private CA pass `verify=SSLContext`.
    `on_failure(purpose)` is told about every failed fetch (the metrics).
    """

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | bool = True,
        lanes: Mapping[str, int] = LANE_CONNECTIONS,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self._verify = verify
        self._lanes = lanes
        self._on_failure = on_failure
        self._clients: dict[tuple[str, str], httpx.AsyncClient] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def _get(self, purpose: str, url: str) -> httpx.AsyncClient:
        # httpx is imported here, not at the top: the configuration models
        # import this package, and the pure core (which compiles them) must
        # not pull in httpx (and, through it, rich).
        import httpx

        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._clients, self._loop = {}, loop  # clients of a finished loop cannot be used (nor closed) here
        parts = urlsplit(url)
        key = (purpose, f"{parts.scheme}://{parts.netloc}")
        client = self._clients.get(key)
        if client is None:
            n = self._lanes.get(purpose, 4)
            limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
            client = self._clients[key] = httpx.AsyncClient(verify=self._verify, trust_env=False, follow_redirects=False, limits=limits)
        return client

    async def aclose(self) -> None:
        if self._loop is asyncio.get_running_loop():
            for client in self._clients.values():
                await client.aclose()
        self._clients, self._loop = {}, None

    def failed(self, purpose: str) -> None:
        """Count an endpoint failure (transport, status or content)."""
        if self._on_failure is not None:
            self._on_failure(purpose)

    async def json(
        self,
        method: str,
        url: str,
        *,
        timeout: float,
        purpose: str = "other",
        data: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        limit: int = MAX_RESPONSE_BYTES,
    ) -> JsonResponse:
        """Send one request and parse a JSON answer of at most `limit` bytes.

        `timeout` bounds the whole exchange — waiting for a pooled connection,
        connecting, sending and reading the body — not each read: an endpoint
        that drips a byte at a time cannot hold a request past it. Raises
        FetchError on transport failures, the deadline and oversized bodies;
        NotSent when the request never left."""
        import httpx

        headers = {"accept": "application/json"}
        sent = False

        async def trace(event: str, info: Mapping[str, Any]) -> None:
            nonlocal sent
            if event in _SENT:
                sent = True

        try:
            async with asyncio.timeout(timeout):
                async with self._get(purpose, url).stream(
                    method, url, data=data, auth=auth, headers=headers, timeout=httpx.Timeout(timeout), extensions={"trace": trace}
                ) as response:
                    chunks, size = [], 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > limit:
                            raise FetchError(f"{method} {url}: response larger than {limit} bytes")
                        chunks.append(chunk)
        except (TimeoutError, httpx.TimeoutException):
            raise (FetchError if sent else NotSent)(f"{method} {url}: timed out after {timeout:g}s") from None
        except httpx.HTTPError as e:
            raise (FetchError if sent else NotSent)(f"{method} {url}: {type(e).__name__}: {e}") from None
        try:
            body = json.loads(b"".join(chunks), parse_constant=_no_constant)
        except (ValueError, RecursionError):
            body = None
        return JsonResponse(response.status_code, response.headers, body)


# ---------------------------------------------------------------- single-flight
K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class SingleFlight(Generic[K, T]):
    """Concurrent `run(key, factory)` calls share one in-flight call per key.

    The shared task is shielded: a caller that goes away (client disconnect)
    does not cancel the fetch the others wait for. Factories should return
    results rather than raise; an exception reaches every waiter.
    """

    def __init__(self) -> None:
        self._tasks: dict[K, asyncio.Task[T]] = {}

    def running(self, key: K) -> bool:
        task = self._tasks.get(key)
        return task is not None and not task.done() and _same_loop(task)

    async def run(self, key: K, factory: Callable[[], Awaitable[T]]) -> T:
        return await asyncio.shield(self.start(key, factory))

    def start(self, key: K, factory: Callable[[], Awaitable[T]]) -> asyncio.Task[T]:
        """The in-flight task for `key`, started if none runs (needs a running loop)."""
        task = self._tasks.get(key)
        if task is None or not _same_loop(task):
            task = asyncio.get_running_loop().create_task(factory())  # type: ignore[arg-type]
            self._tasks[key] = task
            task.add_done_callback(lambda t: self._forget(key, t))
        return task

    def _forget(self, key: K, task: asyncio.Task[T]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]


def _same_loop(task: asyncio.Task) -> bool:
    try:
        return task.get_loop() is asyncio.get_running_loop()
    except RuntimeError:
        return False


# ---------------------------------------------------------------- sharing across reloads
class Shared:
    """Caches and token sources that outlive a configuration reload, keyed by
    what defines them (URL, client id, a digest of the secret, settings), so a
    new snapshot reuses warm JWKS caches and upstream tokens.

    Build every verifier of a new configuration through `obtain`, then call
    `sweep()`: objects the new configuration did not ask for are dropped."""

    def __init__(self) -> None:
        self._objects: dict[Hashable, Any] = {}
        self._touched: set[Hashable] = set()

    def obtain(self, key: Hashable, factory: Callable[[], T]) -> T:
        self._touched.add(key)
        obj = self._objects.get(key)
        if obj is None:
            obj = self._objects[key] = factory()
        return obj

    def sweep(self) -> None:
        self._objects = {k: v for k, v in self._objects.items() if k in self._touched}
        self._touched = set()

    def __len__(self) -> int:
        return len(self._objects)


def secret_digest(secret: str) -> bytes:
    """For `Shared` keys: a changed secret must build a new object."""
    return token_key(secret)
