"""Which credential a verified token belongs to — deterministically.

Routing: a JWT whose (unverified) `iss` and `aud` name credentials that
verify JWTs locally (`jwt_verify`, `oauth2` with a JWKS) goes to those;
anything else goes to the `oauth2` credentials that introspect — but only
when one of them could accept it (`could_introspect`): a token is never sent
to an introspection endpoint when it is not RFC 6750 bearer-token syntax, is
longer than a JWT rr would parse, is a JWT whose unverified `iss`/`aud` the
credential would refuse anyway, or is a secret rr itself injects upstream.
Among the candidates, each verifies the token (signature, claims,
required_claims); exactly one must accept it.

`conflicts()` (for `rr apply`) refuses configurations where one token could
match two credentials: same issuer and audience (an unset one matches any)
unless a shared required claim has provably disjoint values, and more than
one introspection endpoint (rr cannot tell which IdP issued an opaque token
without handing it to the others). Disjointness is proved only for anchored
literals — `^ci$`, `^(?:a|b)$`, prefixes like `^svc-a-`; anything else is
assumed to overlap. Two cases stay possible and are refused at request time
(AMBIGUOUS_MATCH): a token with several audiences, and a list-valued claim
matching both credentials' patterns.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any, Generic, Iterable, Mapping, Protocol, TypeVar

from rr_addon.identity import AMBIGUOUS_MATCH, NO_MATCHING_CREDENTIAL, PATH_MATCH, WRONG_AUDIENCE, Refused, Verified, token_key
from rr_addon.identity.jwt_verify import MAX_TOKEN_LENGTH, ParsedToken, parse

T = TypeVar("T")


class Verifier(Protocol):
    """JwtVerifier and OAuth2Verifier."""

    def verify_cached(self, token: str, *, parsed: ParsedToken | None = None) -> Verified | Refused | None: ...
    async def verify(self, token: str, *, parsed: ParsedToken | None = None) -> Verified | Refused: ...
    async def prewarm(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class MatchSpec:
    label: str  # "proxies[p].credentials[c]", as configuration errors name objects
    issuer: str | None  # None: any
    audience: str | None  # None: any
    required_claims: Mapping[str, str] = field(default_factory=dict)
    local_jwt: bool = True  # verifies JWTs itself
    introspection_url: str | None = None


def spec_for(proxy: str, cred: Any) -> MatchSpec:
    """The match spec of a `jwt_verify` or `oauth2` credential model."""
    label = f"proxies[{proxy}].credentials[{cred.name}]"
    if cred.auth == "jwt_verify":
        return MatchSpec(label, cred.issuer, cred.audience, dict(cred.required_claims))
    local = cred.jwks_url is not None or cred.jwks is not None
    return MatchSpec(label, cred.issuer, cred.audience, dict(cred.required_claims), local, cred.introspection_url)


# ---------------------------------------------------------------- configuration check

_META = frozenset(".^$*+?()[]{}|\\")


def literal_alternatives(pattern: str) -> list[tuple[str, bool]] | None:
    """(literal, exact) pairs for `^lit`, `^lit$`, `^(?:a|b)$`, `^(a|b)`; None
    for any other pattern. exact=False means "starts with"."""
    if not pattern.startswith("^"):
        return None
    body, exact = pattern[1:], False
    if body.endswith("$") and (len(body) - len(body[:-1].rstrip("\\")) - 1) % 2 == 0:
        body, exact = body[:-1], True  # an unescaped trailing $
    grouped = True
    if body.startswith("(?:") and body.endswith(")"):
        body = body[3:-1]
    elif body.startswith("(") and body.endswith(")"):
        body = body[1:-1]
    else:
        grouped = False  # then `^a|b$` means (^a)|(b$): a top-level | is not a literal set
    alts, cur, i = [], [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            if i + 1 >= len(body) or body[i + 1].isalnum():
                return None  # \d, \w, \x41 ... are not plain literals
            cur.append(body[i + 1])
            i += 2
            continue
        if ch == "|":
            if not grouped:
                return None
            alts.append("".join(cur))
            cur = []
        elif ch in _META:
            return None
        else:
            cur.append(ch)
        i += 1
    alts.append("".join(cur))
    return [(a, exact) for a in alts]


def _literals_overlap(xs: list[tuple[str, bool]], ys: list[tuple[str, bool]]) -> bool:
    for a, a_exact in xs:
        for b, b_exact in ys:
            if a_exact and b_exact:
                hit = a == b
            elif a_exact:
                hit = a.startswith(b)
            elif b_exact:
                hit = b.startswith(a)
            else:
                hit = a.startswith(b) or b.startswith(a)
            if hit:
                return True
    return False


def claims_disjoint(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    """True when some claim both require has values no string satisfies twice."""
    for name in a.keys() & b.keys():
        xs, ys = literal_alternatives(a[name]), literal_alternatives(b[name])
        if xs is not None and ys is not None and not _literals_overlap(xs, ys):
            return True
    return False


def _compatible(x: str | None, y: str | None) -> bool:
    return x is None or y is None or x == y


def _overlap(a: MatchSpec, b: MatchSpec) -> bool:
    same_route = _compatible(a.issuer, b.issuer) and _compatible(a.audience, b.audience)
    return same_route and not claims_disjoint(a.required_claims, b.required_claims)


def conflicts(specs: Iterable[MatchSpec]) -> list[str]:
    """One sentence per pair of credentials a single token could match."""
    specs = list(specs)
    out: list[str] = []
    for cls in ("local", "introspection"):
        group = [s for s in specs if (s.local_jwt if cls == "local" else s.introspection_url is not None)]
        for i, a in enumerate(group):
            for b in group[i + 1 :]:
                if _overlap(a, b):
                    out.append(
                        f"{a.label} and {b.label} could both match one token (issuer {a.issuer or 'any'!s}, "
                        f"audience {a.audience or 'any'!s}); give them different audiences, or required_claims "
                        f"on one claim with disjoint anchored values such as '^ci$' and '^prod$'"
                    )
    first: dict[str, MatchSpec] = {}
    for s in specs:
        if s.introspection_url is not None:
            first.setdefault(s.introspection_url, s)
    if len(first) > 1:
        a, b = list(first.values())[:2]
        out.append(
            f"{a.label} and {b.label} introspect at different endpoints ({a.introspection_url}, {b.introspection_url}); "
            f"rr cannot tell which one issued an opaque token without sending it to both"
        )
    return out


def check_unambiguous(specs: Iterable[MatchSpec]) -> None:
    """Raises ValueError with the first conflict."""
    found = conflicts(specs)
    if found:
        raise ValueError(found[0])


# ---------------------------------------------------------------- request time

_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 §2.1 b64token


def could_introspect(spec: MatchSpec, token: str, parsed: ParsedToken | None) -> bool:
    """Whether the introspecting credential `spec` could accept `token`, judged
    without sending it anywhere. An opaque token's issuer cannot be known, so
    any well-formed one could; a JWT names its issuer and audience, and the
    credential checks both on the introspection answer."""
    if len(token) > MAX_TOKEN_LENGTH or not _BEARER_TOKEN.fullmatch(token):
        return False
    if parsed is None:
        return True
    if spec.issuer is not None and parsed.claims.get("iss") != spec.issuer:
        return False
    if spec.audience is None:
        return True
    aud = parsed.claims.get("aud")
    return aud == spec.audience or (isinstance(aud, list) and spec.audience in aud)



@dataclass(frozen=True, slots=True)
class Candidate(Generic[T]):
    spec: MatchSpec
    verifier: Verifier
    value: T  # what the glue maps a match to (e.g. its Caller)


class CredentialIndex(Generic[T]):
    """(iss, aud) -> local-JWT candidates in configuration order, plus the
    introspecting credentials. Build once per configuration."""

    def __init__(self, entries: Iterable[Candidate[T]], never_introspect: frozenset[bytes] = frozenset()) -> None:
        self._never_introspect = never_introspect  # token_key digests of rr's own upstream secrets
        self._local: dict[tuple[str | None, str | None], list[Candidate[T]]] = {}
        introspecting: list[Candidate[T]] = []
        self._order: dict[int, int] = {}
        self.entries: tuple[Candidate[T], ...] = tuple(entries)
        for n, c in enumerate(self.entries):
            self._order[id(c)] = n
            if c.spec.local_jwt:
                self._local.setdefault((c.spec.issuer, c.spec.audience), []).append(c)
            if c.spec.introspection_url is not None:
                introspecting.append(c)
        self.introspecting: tuple[Candidate[T], ...] = tuple(introspecting)

    def candidates(self, issuer: Any, audience: Any) -> tuple[Candidate[T], ...]:
        """Local-JWT candidates for a token's unverified `iss` and `aud` (a string or a list)."""
        if not isinstance(issuer, str):
            return ()
        if isinstance(audience, str):
            auds = [audience]
        else:
            auds = [a for a in audience if isinstance(a, str)] if isinstance(audience, list) else []
        found: dict[int, Candidate[T]] = {}
        for aud in auds:
            for c in self._local.get((issuer, aud), ()):
                found[id(c)] = c
        return tuple(sorted(found.values(), key=lambda c: self._order[id(c)]))

    def no_match(self, parsed: ParsedToken | None) -> Refused:
        """Why a token has no candidate: a JWT from a known issuer for another audience says so."""
        if parsed is not None:
            iss = parsed.claims.get("iss")
            if any(c.spec.issuer == iss for c in self.entries if iss is not None):
                return Refused(WRONG_AUDIENCE, PATH_MATCH)
        return Refused(NO_MATCHING_CREDENTIAL, PATH_MATCH)

    def route(self, token: str) -> tuple[tuple[Candidate[T], ...], ParsedToken | None]:
        """The candidates for a token, and its parse (None if it is no JWT)."""
        parsed = parse(token)
        found = self.candidates(parsed.claims.get("iss"), parsed.claims.get("aud")) if parsed is not None else ()
        if found or not self.introspecting:
            return found, parsed
        if token_key(token) in self._never_introspect:
            return (), parsed  # an upstream API key presented as a caller credential stays here
        return tuple(c for c in self.introspecting if could_introspect(c.spec, token, parsed)), parsed


def _choose(results: list[tuple[Candidate[T], Verified | Refused]]) -> tuple[Candidate[T], Verified] | Refused:
    accepted = [(c, r) for c, r in results if isinstance(r, Verified)]
    if len(accepted) == 1:
        return accepted[0]  # type: ignore[return-value]
    if accepted:
        return Refused(AMBIGUOUS_MATCH, PATH_MATCH, " and ".join(c.spec.label for c, _ in accepted))
    return results[0][1]  # type: ignore[return-value]  # the first candidate's refusal, in configuration order


def identify_cached(index: CredentialIndex[T], token: str) -> tuple[Candidate[T], Verified] | Refused | None:
    """Sync, no I/O. None: some candidate needs keys or an introspection answer; await `identify`."""
    candidates, parsed = index.route(token)
    if not candidates:
        return index.no_match(parsed)
    results = []
    for c in candidates:
        r = c.verifier.verify_cached(token, parsed=parsed)
        if r is None:
            return None
        results.append((c, r))
    return _choose(results)


async def prewarm(index: CredentialIndex[Any]) -> bool:
    """Fetch every remote JWKS now (call when a configuration is loaded, in
    the background). True when every verifier has keys."""
    verifiers = {id(c.verifier): c.verifier for c in index.entries}.values()
    results = await asyncio.gather(*(v.prewarm() for v in verifiers))
    return all(results)


async def identify(index: CredentialIndex[T], token: str) -> tuple[Candidate[T], Verified] | Refused:
    candidates, parsed = index.route(token)
    if not candidates:
        return index.no_match(parsed)
    results = []
    for c in candidates:
        r = c.verifier.verify_cached(token, parsed=parsed)
        results.append((c, r if r is not None else await c.verifier.verify(token, parsed=parsed)))
    return _choose(results)
