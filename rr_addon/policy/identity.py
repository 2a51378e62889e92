"""The pure parts of identity settings: endpoint URL policy, JWKS parsing, claim patterns.

The policy language checks `jwt_verify`, `oauth2` and `oauth2_client_credentials`
settings with these when a file is loaded; the verifiers (`rr_addon.identity`)
use the same code at run time. Nothing here does I/O; PyJWT and cryptography
load only where a key is parsed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, NamedTuple
from urllib.parse import urlsplit

import re2

from rr_addon.core.reasons import ALGORITHM_NOT_ALLOWED, UNKNOWN_KID
from rr_addon.settings import without_userinfo

# ---------------------------------------------------------------- endpoint URLs

_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


def check_endpoint_url(url: str) -> str:
    """https, or plain http to a loopback host only. Raises ValueError; its
    message never repeats user info (the URL's password may be a secret)."""
    shown = without_userinfo(url)
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"{shown!r} is not a valid URL") from None
    if parts.scheme not in ("https", "http") or not host:
        raise ValueError(f"{shown!r} must be an https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{shown!r}: credentials do not belong in the URL")
    if parts.fragment:
        raise ValueError(f"{shown!r}: a fragment is not allowed")
    if parts.scheme == "http" and not _is_loopback(host):
        raise ValueError(f"{shown!r}: plain http is only allowed to a loopback address; use https")
    return url


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False



# ---------------------------------------------------------------- claim rules

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


def compile_pattern(pattern: str) -> Any:
    """An RE2 regex; raises ValueError naming the problem."""
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as e:
        msg = e.args[0].decode("utf-8", "replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        raise ValueError(f"invalid RE2 regex {pattern!r}: {msg}") from None



# ---------------------------------------------------------------- JWKS

# The key type each algorithm needs. `none` and ES256K are deliberately absent.
ALG_FAMILY: Mapping[str, str] = {
    **{a: "RSA" for a in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")},
    "ES256": "EC:secp256r1",
    "ES384": "EC:secp384r1",
    "ES512": "EC:secp521r1",
    "EdDSA": "OKP",
    **{a: "oct" for a in ("HS256", "HS384", "HS512")},
}
SUPPORTED_ALGORITHMS = frozenset(ALG_FAMILY)
HMAC_ALGORITHMS = frozenset(a for a, f in ALG_FAMILY.items() if f == "oct")
HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}  # RFC 7518 §3.2: at least the hash size
MIN_RSA_BITS = 2048

@dataclass(frozen=True, slots=True)
class Key:
    kid: str | None
    family: str
    obj: Any  # a cryptography public key object, or bytes for an HMAC secret
    alg: str | None = None  # the JWK's declared "alg", if any

    def fits(self, alg: str) -> bool:
        if ALG_FAMILY.get(alg) != self.family or (self.alg is not None and self.alg != alg):
            return False
        return self.family != "oct" or len(self.obj) >= HMAC_MIN_BYTES[alg]

    def __repr__(self) -> str:  # never print HMAC secret bytes
        return f"Key(kid={self.kid!r}, family={self.family!r}, alg={self.alg!r})"


class Miss(NamedTuple):
    reason: str
    detail: str | None = None


def _family(obj: Any) -> str | None:
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    if isinstance(obj, bytes):
        return "oct"
    if isinstance(obj, rsa.RSAPublicKey):
        return "RSA" if obj.key_size >= MIN_RSA_BITS else None
    if isinstance(obj, ec.EllipticCurvePublicKey):
        return "EC:" + obj.curve.name
    if isinstance(obj, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return "OKP"
    return None


def key_from_jwk(jwk: Any, *, allow_symmetric: bool) -> Key | None:
    """A verification key, or None for a JWK rr cannot or must not use
    (encryption keys, unknown types, short RSA keys, symmetric keys from a
    public endpoint)."""
    if not isinstance(jwk, dict):
        return None
    kid, alg, use, ops = jwk.get("kid"), jwk.get("alg"), jwk.get("use"), jwk.get("key_ops")
    if (kid is not None and not isinstance(kid, str)) or (alg is not None and alg not in SUPPORTED_ALGORITHMS):
        return None
    if (use is not None and use != "sig") or (ops is not None and (not isinstance(ops, list) or "verify" not in ops)):
        return None
    if jwk.get("kty") == "oct" and not allow_symmetric:
        return None
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
    from jwt.api_jwk import PyJWK  # PyJWT loads only where keys are parsed
    from jwt.exceptions import PyJWTError

    try:
        obj = PyJWK(jwk).key
    except (PyJWTError, TypeError, ValueError):
        return None
    if isinstance(obj, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        obj = obj.public_key()  # a private JWK: verification needs only the public half
    family = _family(obj)
    if family is None:
        return None
    return Key(kid, family, obj, alg)


class KeySet:
    """Keys by kid. Immutable after construction."""

    __slots__ = ("by_kid", "keys")

    def __init__(self, keys: Iterable[Key]) -> None:
        self.keys = tuple(keys)
        by_kid: dict[str | None, tuple[Key, ...]] = {}
        for k in self.keys:
            by_kid[k.kid] = by_kid.get(k.kid, ()) + (k,)
        self.by_kid = by_kid

    def __len__(self) -> int:
        return len(self.keys)

    def select(self, kid: str | None, alg: str) -> Key | Miss:
        candidates = self.keys if kid is None else self.by_kid.get(kid, ())
        return pick(candidates, kid, alg)


def pick(candidates: tuple[Key, ...], kid: str | None, alg: str) -> Key | Miss:
    if not candidates:
        return Miss(UNKNOWN_KID, f"kid {kid!r}" if kid is not None else "no kid and no key")
    fitting = [k for k in candidates if k.fits(alg)]
    if len(fitting) == 1:
        return fitting[0]
    if not fitting:
        return Miss(ALGORITHM_NOT_ALLOWED, f"{alg} does not fit the {'/'.join(sorted({k.family for k in candidates}))} key")
    # Several keys fit and the token does not say which: refuse rather than try each.
    return Miss(UNKNOWN_KID, "several keys fit and the token names no kid" if kid is None else f"kid {kid!r} is ambiguous")


def parse_jwks(doc: Any, *, allow_symmetric: bool) -> KeySet:
    """Raises ValueError when the document has no usable key."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError("not a JWKS document (an object with a 'keys' list)")
    keys = [k for k in (key_from_jwk(j, allow_symmetric=allow_symmetric) for j in doc["keys"]) if k is not None]
    if not keys:
        raise ValueError(f"none of the {len(doc['keys'])} keys is usable for signature verification")
    return KeySet(keys)


@dataclass(frozen=True, slots=True)
class JwksSettings:
    min_ttl: float = 60.0  # lower bound for Cache-Control max-age
    max_ttl: float = 86400.0  # upper bound
    default_ttl: float = 600.0  # when the endpoint sends no max-age
    refetch_interval: float = 30.0  # at most one fetch per interval on unknown kid / failure
    timeout: float = 5.0
