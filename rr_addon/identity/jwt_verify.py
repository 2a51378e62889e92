"""Verifying a JWT (JWS compact form) against one `jwt_verify` credential.

Parsing is strict and done once (`parse`), so the matcher can read the
unverified `iss`/`aud` to pick candidates and the verifier reuses the parse.
Order of checks: structure → algorithm allow-list → key (kid, key type) →
signature → issuer → audience → exp/nbf/iat → scope → required claims. No
claim is believed before the signature is.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping


from rr_addon.identity import (
    ALGORITHM_NOT_ALLOWED,
    BAD_SIGNATURE,
    CLAIM_INVALID,
    CLAIM_MISSING,
    EXPIRED,
    INSUFFICIENT_SCOPE,
    MALFORMED_TOKEN,
    NOT_YET_VALID,
    WRONG_AUDIENCE,
    WRONG_ISSUER,
    WRONG_TOKEN_TYPE,
    Http,
    Refused,
    Shared,
    Verified,
)
from rr_addon.identity.jwks import (
    SUPPORTED_ALGORITHMS,
    VERIFIERS,
    JwksSettings,
    Key,
    Miss,
    RemoteJwks,
    StaticKeys,
    hmac_keys,
    inline_keys,
)

MAX_TOKEN_LENGTH = 16384
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})  # RFC 9068 §4


# ---------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A structurally valid JWS. Nothing in it is trusted until verified."""

    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    signing_input: bytes
    signature: bytes
    alg: str
    kid: str | None

    def __repr__(self) -> str:  # keep token material out of logs and tracebacks
        return f"ParsedToken(alg={self.alg!r}, kid={self.kid!r})"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN/Infinity would make exp meaningless


def _segment(seg: bytes) -> bytes:
    raw = base64.urlsafe_b64decode(seg + b"=" * (-len(seg) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=") != seg:
        raise ValueError("non-canonical base64url")  # also catches '=', '+', '/' and junk
    return raw


def _json_object(raw: bytes) -> dict[str, Any]:
    value = json.loads(raw, parse_constant=_reject_constant)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def parse(token: str) -> ParsedToken | None:
    """The parsed token, or None when `token` is not a well-formed signed JWT."""
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        return None
    try:
        data = token.encode("ascii")
        h, p, s = data.split(b".")
        header, claims, signature = _json_object(_segment(h)), _json_object(_segment(p)), _segment(s)
    except (ValueError, binascii.Error, RecursionError):
        return None
    alg, kid = header.get("alg"), header.get("kid")
    if not isinstance(alg, str) or (kid is not None and not isinstance(kid, str)):
        return None
    if "crit" in header or "b64" in header:
        return None  # RFC 7515 §4.1.11: extensions we do not implement must be refused
    return ParsedToken(header, claims, h + b"." + p, signature, alg, kid)


# ---------------------------------------------------------------- claim rules

from rr_addon.policy.identity import compile_pattern  # noqa: E402,F401


def claim_strings(value: Any) -> list[str]:
    """A claim as regexes see it — the same spelling as the rules' `claims:`
    matcher (rr_addon.core.rules.render): strings as they are, anything else
    as compact JSON; a list gives each element (any may match)."""
    items = value if isinstance(value, list) else [value]
    return [v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, separators=(",", ":")) for v in items]


def numeric_date(value: Any) -> float | None:
    """A JSON number usable as a date (RFC 7519 NumericDate), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond any date
        return None
    return number if math.isfinite(number) else None


class ClaimRules:
    """Checks on claims once they are trusted; shared by local JWT
    verification and introspection. `issuer`/`audience` None: not checked."""

    def __init__(
        self,
        *,
        issuer: str | None,
        audience: str | None,
        required_claims: Mapping[str, str] | None = None,
        leeway: float = 60.0,
        require_exp: bool = True,
        scopes: Iterable[str] = (),
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.require_exp = require_exp
        self.scopes = frozenset(scopes)
        self.required = tuple((name, compile_pattern(p)) for name, p in (required_claims or {}).items())

    def check(self, claims: Mapping[str, Any], now: float) -> tuple[str, str | None] | None:
        """(reason, detail) for the first failed check, else None."""
        if self.issuer is not None and claims.get("iss") != self.issuer:
            return WRONG_ISSUER, None
        if self.audience is not None:
            aud = claims.get("aud")
            if not (aud == self.audience or (isinstance(aud, list) and self.audience in aud)):
                return WRONG_AUDIENCE, None
        for name in ("exp", "nbf", "iat"):
            if name in claims and numeric_date(claims[name]) is None:
                return CLAIM_INVALID, name
        if "exp" in claims:
            if now >= claims["exp"] + self.leeway:
                return EXPIRED, None
        elif self.require_exp:
            return CLAIM_MISSING, "exp"
        if "nbf" in claims and now + self.leeway < claims["nbf"]:
            return NOT_YET_VALID, "nbf"
        if "iat" in claims and now + self.leeway < claims["iat"]:
            return NOT_YET_VALID, "iat"
        if self.scopes:
            scope = claims.get("scope")
            granted = set(scope.split()) if isinstance(scope, str) else set()
            if not self.scopes <= granted:
                return INSUFFICIENT_SCOPE, " ".join(sorted(self.scopes - granted))
        for name, regex in self.required:
            if name not in claims:
                return CLAIM_MISSING, name
            if not any(regex.search(v) for v in claim_strings(claims[name])):
                return CLAIM_INVALID, name
        return None


def verified(claims: Mapping[str, Any], path: str) -> Verified:
    iss, sub, exp = claims.get("iss"), claims.get("sub"), numeric_date(claims.get("exp"))
    return Verified(
        MappingProxyType(dict(claims)),
        path,
        iss if isinstance(iss, str) else None,
        sub if isinstance(sub, str) else None,
        exp,
    )


# ---------------------------------------------------------------- the verifier


class JwtVerifier:
    """Verifies JWTs for one credential. `verify_cached` never does I/O."""

    def __init__(
        self,
        *,
        keys: StaticKeys | RemoteJwks,
        algorithms: Iterable[str],
        rules: ClaimRules,
        token_types: frozenset[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.algorithms = frozenset(algorithms)
        if not self.algorithms or not self.algorithms <= SUPPORTED_ALGORITHMS:
            raise ValueError(f"algorithms must be a non-empty subset of {sorted(SUPPORTED_ALGORITHMS)}")
        self.keys = keys
        self.rules = rules
        self.token_types = token_types  # None: any typ header
        self._clock = clock

    @property
    def path(self) -> str:
        return self.keys.path

    def __repr__(self) -> str:
        return f"JwtVerifier({self.keys!r}, iss={self.rules.issuer!r}, aud={self.rules.audience!r})"

    def verify_cached(
        self, token: str | ParsedToken, now: float | None = None, *, parsed: ParsedToken | None = None
    ) -> Verified | Refused | None:
        """The result, or None when keys must be fetched first (then await `verify`).
        `parsed`: the token already parsed by the caller (saves a parse)."""
        parsed = parsed or (token if isinstance(token, ParsedToken) else parse(token))
        if parsed is None:
            return Refused(MALFORMED_TOKEN, self.path)
        early = self._precheck(parsed)
        if early is not None:
            return early
        key = self.keys.lookup(parsed.kid, parsed.alg)
        if key is None:
            return None
        return self._finish(parsed, key, now)

    async def verify(
        self, token: str | ParsedToken, now: float | None = None, *, parsed: ParsedToken | None = None
    ) -> Verified | Refused:
        parsed = parsed or (token if isinstance(token, ParsedToken) else parse(token))
        if parsed is None:
            return Refused(MALFORMED_TOKEN, self.path)
        result = self.verify_cached(parsed, now)
        if result is not None:
            return result
        assert parsed is not None and isinstance(self.keys, RemoteJwks)
        await self.keys.refresh()
        key = self.keys.lookup(parsed.kid, parsed.alg, allow_fetch=False)
        assert key is not None
        return self._finish(parsed, key, now)

    async def prewarm(self) -> bool:
        """Fetch remote keys now (at configuration load); True when keys are available."""
        return await self.keys.prewarm() if isinstance(self.keys, RemoteJwks) else True

    def _precheck(self, parsed: ParsedToken) -> Refused | None:
        if parsed.alg not in self.algorithms:
            return Refused(ALGORITHM_NOT_ALLOWED, self.path, parsed.alg[:16])
        if self.token_types is not None:
            typ = parsed.header.get("typ")
            if not isinstance(typ, str) or typ.lower() not in self.token_types:
                return Refused(WRONG_TOKEN_TYPE, self.path, "typ must be at+jwt")
        return None

    def _finish(self, parsed: ParsedToken, key: Key | Miss, now: float | None) -> Verified | Refused:
        if isinstance(key, Miss):
            return Refused(key.reason, self.path, key.detail)
        try:
            good = VERIFIERS[parsed.alg].verify(parsed.signing_input, key.obj, parsed.signature)
        except (ValueError, TypeError):
            good = False
        if not good:
            return Refused(BAD_SIGNATURE, self.path)
        failed = self.rules.check(parsed.claims, self._clock() if now is None else now)
        if failed is not None:
            return Refused(failed[0], self.path, failed[1])
        return verified(parsed.claims, self.path)


# ---------------------------------------------------------------- from configuration


def build_keys(
    *,
    jwks_url: str | None,
    jwks: Mapping[str, Any] | None,
    secret: str | None,
    algorithms: Iterable[str],
    settings: JwksSettings,
    http: Http,
    shared: Shared | None,
    clock: Callable[[], float] = time.monotonic,
) -> StaticKeys | RemoteJwks:
    """The key source of a credential; remote caches are shared across reloads."""
    if jwks_url is not None:
        url = jwks_url

        def make() -> RemoteJwks:
            return RemoteJwks(url, http=http, settings=settings, clock=clock)

        return shared.obtain(("jwks", url, settings), make) if shared is not None else make()
    if jwks is not None:
        return inline_keys(dict(jwks))
    if secret is not None:
        return hmac_keys(secret, algorithms)
    raise ValueError("a verifying credential needs jwks_url, jwks or secret")


def build(cred: Any, *, secret: str | None, http: Http, shared: Shared | None = None) -> JwtVerifier:
    """A verifier for a `jwt_verify` credential (rr_addon.policy.identity_schema.JwtVerifyCaller);
    `secret` is its resolved HMAC secret, if it uses one. Raises ValueError."""
    keys = build_keys(
        jwks_url=cred.jwks_url,
        jwks=cred.jwks,
        secret=secret,
        algorithms=cred.algorithms,
        settings=cred.jwks_cache.settings(),
        http=http,
        shared=shared,
    )
    rules = ClaimRules(
        issuer=cred.issuer,
        audience=cred.audience,
        required_claims=cred.required_claims,
        leeway=cred.leeway,
        require_exp=cred.require_exp,
    )
    return JwtVerifier(keys=keys, algorithms=cred.algorithms, rules=rules)

