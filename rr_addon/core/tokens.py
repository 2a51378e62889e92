"""Minted tokens (`rr token mint`): short-lived children of a proxy credential.

A token is self-contained and signed, so every data plane verifies it offline
from the configuration snapshot it already holds (no database read per
request):

    rrt1.<base64url(JSON payload)>.<base64url(HMAC-SHA256(key, "rrt1." + payload))>

The key is derived from the snapshot's digest key (`Snapshot.hmac_key`, kept
encrypted under the master key), so only someone holding the master key can
mint. The payload names the parent (proxy, credential) and its generation, the
expiry and the narrowing: targets, "METHOD PATH" allow entries. A token only
narrows: the parent must still exist and be usable, and the parent's rules,
meters and filters all still apply (decide.py checks the token after them).

The generation is a random value the store renews whenever the parent
credential is created (so also deleted and re-created under the same name),
its secret changes or its kind changes: a token whose generation differs from
its parent's is refused, so rotating the parent's key voids its children.

A child of a credential that verifies tokens (`jwt_verify`, `oauth2`) is
minted from one caller's token, verified at minting by the same verifier the
data planes run (`rr token mint --jwt-file`): it carries that caller's
verified claims, so the parent's `claims:` rules — allow and deny — see at
every use what they would see for the caller, and it expires no later than
the caller's token.

`--max-requests N` is a counter of its own, `token:<id>`, checked and counted
with the request's meter counters in one atomic backend call (exact across
data planes with Redis), dead when the token expires.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any, Mapping

from rr_addon.core import reasons
from rr_addon.core.quota import CounterOp, Plan
from rr_addon.policy.windows import Window

PREFIX = "rrt1."
_DERIVE = b"rr minted token signing key v1"
MAX_ALLOW = 64
MAX_REQUESTS = 1_000_000_000
# The meter name of a token's request budget in counters, refusals and metrics:
# no configured meter name starts with '-', so it never collides with one.
BUDGET = "-max-requests"


@dataclass(frozen=True, slots=True)
class Allow:
    """One "METHOD PATH" entry: METHOD is a method or `*`; PATH is exact, or a
    prefix of whole segments when it ends with `*` (matched against the
    canonical path): `/v1/*` is everything under `/v1/`, and `/v1*` is `/v1`
    and everything under `/v1/` — never `/v1admin`."""

    method: str
    path: str

    def matches(self, method: str, path: str) -> bool:
        if self.method != "*" and self.method != method.upper():
            return False
        if self.path.endswith("*"):
            prefix = self.path[:-1]
            if prefix.endswith("/"):
                return path.startswith(prefix)
            return path == prefix or path.startswith(prefix + "/")
        return path == self.path

    @property
    def segment_note(self) -> str | None:
        """What a prefix not ending in `/*` matches, said at minting (it is not a string prefix)."""
        if not self.path.endswith("*") or self.path.endswith("/*"):
            return None
        p = self.path[:-1]
        return f'--allow "{self.method} {self.path}" matches {p} and paths under {p}/ (whole segments), not e.g. {p}admin'


@dataclass(frozen=True, slots=True)
class Token:
    id: str
    proxy: str
    credential: str
    expires_at: int  # epoch seconds
    targets: tuple[str, ...] = ()  # empty: every target of the parent
    allow: tuple[Allow, ...] = ()  # empty: every method and path
    generation: str = ""  # the parent's generation when minted (Caller.generation)
    max_requests: int | None = None  # admitted requests over the token's whole life
    claims: Mapping[str, Any] | None = None  # a verifying parent's: the caller's verified claims at minting

    @property
    def subject(self) -> str | None:
        sub = self.claims.get("sub") if self.claims is not None else None
        return sub if isinstance(sub, str) else None

    def audit(self) -> dict[str, str | None] | None:
        """The audit's verification summary of a child minted from a verified caller."""
        if self.claims is None:
            return None
        iss = self.claims.get("iss")
        return {"subject": self.subject, "issuer": iss if isinstance(iss, str) else None, "verification": "minted token"}

    def refusal(self, target: str, method: str, path: str) -> str | None:
        """Why this token may not make this request (its narrowing), or None."""
        if self.targets and target not in self.targets:
            return reasons.TOKEN_TARGET
        if self.allow and not any(a.matches(method, path) for a in self.allow):
            return reasons.TOKEN_NOT_ALLOWED
        return None


def parse_allow(text: str) -> Allow:
    """ "METHOD PATH" as typed on the command line; ValueError with the reason."""
    method, sep, path = text.strip().partition(" ")
    path = path.strip()
    if not sep or not method or not path:
        raise ValueError(f"--allow {text!r}: expected \"METHOD PATH\", e.g. \"GET /v1/*\"")
    if not (method == "*" or method.isalpha()):
        raise ValueError(f"--allow {text!r}: METHOD must be an HTTP method or *")
    if not path.startswith("/") or any(c.isspace() for c in path) or "*" in path[:-1]:
        raise ValueError(f"--allow {text!r}: PATH must start with / and may only end with * (a prefix)")
    return Allow(method.upper(), path)


def signing_key(hmac_key: bytes) -> bytes:
    return hmac.new(hmac_key, _DERIVE, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode(token: Token, hmac_key: bytes) -> str:
    payload = {"id": token.id, "p": token.proxy, "c": token.credential, "exp": token.expires_at, "g": token.generation}
    if token.targets:
        payload["t"] = list(token.targets)
    if token.allow:
        payload["a"] = [[a.method, a.path] for a in token.allow]
    if token.max_requests is not None:
        payload["n"] = token.max_requests
    if token.claims is not None:
        payload["cl"] = dict(token.claims)
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    signed = PREFIX + body
    return signed + "." + _b64(hmac.new(signing_key(hmac_key), signed.encode(), hashlib.sha256).digest())


def same_generation(token: Token, generation: str) -> bool:
    """The parent is still the credential the token was minted for (a token minted
    before generations existed carries none and never matches a stored one)."""
    return hmac.compare_digest(token.generation.encode(), generation.encode())


def looks_like(secret: str) -> bool:
    return secret.startswith(PREFIX)


def decode(secret: str, hmac_key: bytes) -> Token | str:
    """The token, or the reason it is refused (a bad signature or shape: never
    which part was wrong beyond that)."""
    signed, dot, sig = secret.rpartition(".")
    if not dot or not signed.startswith(PREFIX):
        return reasons.TOKEN_BAD_SIGNATURE
    try:
        given = _unb64(sig)
    except (binascii.Error, ValueError):
        return reasons.TOKEN_BAD_SIGNATURE
    expected = hmac.new(signing_key(hmac_key), signed.encode(), hashlib.sha256).digest()
    # one spelling per token: the lenient decoder drops characters outside the alphabet
    if not hmac.compare_digest(given, expected) or _b64(given) != sig:
        return reasons.TOKEN_BAD_SIGNATURE
    try:
        p = json.loads(_unb64(signed[len(PREFIX) :]))
        return Token(
            id=str(p["id"]),
            proxy=str(p["p"]),
            credential=str(p["c"]),
            expires_at=int(p["exp"]),
            targets=tuple(str(t) for t in p.get("t", ())),
            allow=tuple(Allow(str(m), str(path)) for m, path in p.get("a", ())[:MAX_ALLOW]),
            generation=str(p.get("g", "")),
            max_requests=_count(p.get("n")),
            claims=_claims(p.get("cl")),
        )
    except (ValueError, KeyError, TypeError):
        # signed by us but unreadable: a future format, never forged
        return reasons.TOKEN_BAD_SIGNATURE


def _count(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("max requests")
    return value


def _claims(value: object) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("claims")
    return value


def budget_op(token: Token) -> CounterOp | None:
    """The counter of a token's `--max-requests`: one per admitted request, refused
    at the limit, dead (Redis EXPIREAT, database pruning) when the token expires."""
    if token.max_requests is None:
        return None
    key = f"token:{token.id}"
    return CounterOp(key, 1, token.max_requests, Window("token", 0, token.expires_at, key), BUDGET)


def with_budget(plan: Plan, token: Token | None) -> Plan:
    """The meters' plan plus the token's budget: checked and counted in the same
    atomic call, so a refused meter counts nothing against the token and an
    exhausted token counts nothing against the meters. Appended after the
    meters' groups, it adds no RateLimit header (its limit never resets)."""
    op = budget_op(token) if token is not None else None
    if op is None:
        return plan
    return Plan(plan.ops + (op,), plan.groups, plan.now)


def budget_used_up(verdict) -> bool:
    """A refused meter verdict (core.quota.Verdict) came from a token's budget."""
    return any(meter == BUDGET for meter, _ in verdict.exhausted)
