"""How rr authenticates itself to an OAuth token endpoint (RFC 6749 §2.3,
RFC 7523 §2.2): `basic` (HTTP Basic), `post` (client_secret in the form),
`private_key_jwt` (a short-lived JWT signed with the client's private key,
OpenID Connect Core §9) or `none` (a public client: client_id only).

Keys are parsed when the configuration is built, so a bad PEM fails `rr apply`,
never a request. Nothing here logs or repr()s key material.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import quote_plus

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME = 60  # seconds: a client assertion is used once, right away
METHODS = ("basic", "post", "private_key_jwt", "none")
_CURVE_ALG = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key and the JWS algorithm it signs with."""

    key: Any = field(repr=False)
    algorithm: str
    key_id: str | None = None


def load_signing_key(pem: str, *, algorithm: str | None = None, key_id: str | None = None, what: str = "private key") -> SigningKey:
    """Parse a PEM private key (RSA, EC or Ed25519). Raises ValueError with a
    sentence that never repeats the key."""
    try:
        key = load_pem_private_key(pem.encode("utf-8"), password=None)
    except (ValueError, TypeError, UnicodeError):
        raise ValueError(f"the {what} is not an unencrypted PEM private key (RSA, EC or Ed25519)") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise ValueError(f"the {what} is an RSA key of {key.key_size} bits; at least 2048 are needed")
        allowed, default = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"), "RS256"
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        default = _CURVE_ALG.get(key.curve.name)
        if default is None:
            raise ValueError(f"the {what} is on curve {key.curve.name}; P-256, P-384 or P-521 are supported")
        allowed = (default,)
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        allowed, default = ("EdDSA",), "EdDSA"
    else:
        raise ValueError(f"the {what} is neither RSA, EC nor Ed25519")
    if algorithm is not None and algorithm not in allowed:
        raise ValueError(f"algorithm {algorithm} does not fit the {what} (use {', '.join(allowed)})")
    return SigningKey(key, algorithm or default, key_id)


def sign(signing: SigningKey, claims: dict[str, Any]) -> str:
    headers = {"typ": "JWT"} | ({"kid": signing.key_id} if signing.key_id else {})
    return jwt.encode(claims, signing.key, algorithm=signing.algorithm, headers=headers)


@dataclass(frozen=True, slots=True)
class ClientAuth:
    """One of METHODS with what it needs: `secret` for basic/post, `key` for private_key_jwt."""

    method: str
    client_id: str | None
    secret: str | None = field(default=None, repr=False)
    key: SigningKey | None = field(default=None, repr=False)
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"client_auth is one of {', '.join(METHODS)}")
        if self.method != "none" and not self.client_id:
            raise ValueError(f"client_auth {self.method} needs a client_id")
        if self.method in ("basic", "post") and not self.secret:
            raise ValueError(f"client_auth {self.method} needs a client_secret")
        if self.method == "private_key_jwt" and self.key is None:
            raise ValueError("client_auth private_key_jwt needs a client_key")

    def apply(self, form: dict[str, str], token_url: str) -> tuple[str, str] | None:
        """Add the client's authentication to `form`; return HTTP Basic credentials, if any."""
        if self.method == "basic":
            assert self.client_id is not None and self.secret is not None
            return (quote_plus(self.client_id), quote_plus(self.secret))  # RFC 6749 §2.3.1
        if self.method == "post":
            form.update(client_id=self.client_id or "", client_secret=self.secret or "")
        elif self.method == "private_key_jwt":
            assert self.key is not None and self.client_id is not None
            form.update(client_id=self.client_id, client_assertion_type=CLIENT_ASSERTION_TYPE, client_assertion=self.assertion(token_url))
        elif self.client_id:
            form["client_id"] = self.client_id
        return None

    def assertion(self, token_url: str) -> str:
        """RFC 7523 §3: iss = sub = client_id, aud = the token endpoint, a fresh jti, one minute of life."""
        assert self.key is not None
        now = int(self.clock())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": token_url, "iat": now, "exp": now + ASSERTION_LIFETIME, "jti": secrets.token_urlsafe(18)}
        return sign(self.key, claims)
