"""Values that flow through the policy core: request facts in, a Decision out.

Everything here is immutable and free of I/O, so the same values serve the
proxy, `rr explain` and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

# Status codes and rr codes (README: what the caller sees). One code, one status.
STATUS = {
    "unauthenticated": 401,
    "unknown-target": 403,
    "access-denied": 403,
    "unknown-model": 403,
    "quota-exceeded": 429,
    "invalid-request": 400,
    "payload-too-large": 413,
    "unsupported-media-type": 415,
    "unfilterable-response": 422,
    "upstream-unavailable": 502,
    "upstream-credential-error": 502,
    "upstream-auth-unavailable": 502,
    "response-too-large": 502,
    "upstream-timeout": 504,
    "internal-error": 500,
    "approval-timeout": 403,  # held for approval; nobody decided in time
    "approval-capacity": 429,  # too many requests of this proxy are held already
    "approval-unavailable": 503,  # rr could not hold it (database unreachable) or stopped while it was held
    "approval-withdrawn": 499,  # the client left while it was held: recorded, never answered (nginx's "client closed request")
}

ALLOW = "allow"
DENY = "deny"
HOLD = "approve"  # held until a person approves or denies it (docs/approvals.md)


@dataclass(frozen=True, slots=True)
class Hold:
    """What a held request waits for: at most `timeout` seconds; `notify`: webhook URLs to tell."""

    timeout: int
    notify: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """Everything the core may know about a request. Built once per request by
    the glue (`rr_addon.mitm.flows`); header names are lower-case, values decoded."""

    method: str
    scheme: str
    host: str
    port: int
    path: str  # origin-form path including the query string, as received
    headers: tuple[tuple[str, str], ...] = ()
    # Proxy-Authorization values sent on the CONNECT that opened this tunnel.
    tunnel_authorization: tuple[str, ...] = ()
    body: bytes | None = None
    # The request's own authority (HTTP/2 `:authority`, or an absolute-form target's), "" if none.
    authority: str = ""
    # The TLS server name the client sent to rr (None: no TLS, or no SNI).
    sni: str | None = None

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]

    def with_body(self, body: bytes | None) -> RequestFacts:
        """`dataclasses.replace(self, body=body)` at a third of its cost (once per request)."""
        return RequestFacts(self.method, self.scheme, self.host, self.port, self.path, self.headers, self.tunnel_authorization, body, self.authority, self.sni)


@dataclass(frozen=True, slots=True)
class Presented:
    """A credential as the caller presented it."""

    channel: str  # the header it came from (or "connect" for the tunnel)
    header: str  # request header to remove when consumed ("" for the tunnel)
    secret: str
    username: str | None = None  # set for Basic


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling: an authenticated proxy credential."""

    proxy: str
    credential: str
    auth: str
    channel: str  # where the credential was found (proxy-authorization, x-rr-authorization, ...)
    claims: Mapping[str, object] | None = None
    token: str | None = None  # id of the minted token presented (the credential above is its parent)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of the policy for one request.

    `reason` is one of the fixed sentences in `rr_addon.core.reasons`; `scope`
    and `rule` name what decided (None when nothing specific did)."""

    result: str  # "allow" | "deny" | "approve" (held: never an answer itself, the glue waits for a person)
    status: int
    code: str | None = None
    scope: str | None = None
    rule: str | None = None
    reason: str = ""
    detail: str | None = None  # extra human-readable context (never a secret)
    hold: Hold | None = None  # set when result is "approve"

    @property
    def allowed(self) -> bool:
        return self.result == ALLOW

    @property
    def held(self) -> bool:
        return self.result == HOLD

    @classmethod
    def deny(
        cls,
        code: str,
        reason: str,
        *,
        scope: str | None = None,
        rule: str | None = None,
        detail: str | None = None,
    ) -> Decision:
        return cls(DENY, STATUS[code], code, scope, rule, reason, detail)

    @classmethod
    def allow(cls, reason: str, *, scope: str | None = None, rule: str | None = None) -> Decision:
        return cls(ALLOW, 200, None, scope, rule, reason)

    @classmethod
    def approve(cls, reason: str, hold: Hold, *, scope: str, rule: str) -> Decision:
        """Held for a person. Its status is a refusal's, so a held decision answered by
        mistake refuses (fail closed); the glue answers with the person's decision."""
        return cls(HOLD, 403, None, scope, rule, reason, hold=hold)


@dataclass(frozen=True, slots=True)
class Route:
    """A request mapped to a target and the target credential to inject."""

    target: str
    target_credential: str | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What `decide()` returns: the decision plus what the glue needs to act on it."""

    decision: Decision
    identity: Identity | None = None
    route: Route | None = None
    # Request headers (lower-case names) to remove before anything else sees the flow.
    strip_headers: frozenset[str] = field(default_factory=frozenset)
    report_only: bool = False  # proxy in report mode: a deny is recorded, not enforced
    # What authentication found, for the steps after it (structured, never read from `reason`):
    # no credential at all (a proxy may answer with a 407 challenge) ...
    missing_credential: bool = False
    # ... or a credential that matched no stored digest: a token verifier may still accept it.
    unmatched: Presented | None = field(default=None, repr=False, compare=False)
