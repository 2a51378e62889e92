"""Configuration of verified identities (docs/policy.md) as pydantic models.

Proxy credentials (discriminated by `auth:`):
  jwt_verify  keys from `jwks_url`, an inline `jwks` (public keys only) or an
              HMAC `secret` (stored encrypted; omitted = keep the stored one);
              `issuer`, `audience`, `algorithms`, `leeway`, `required_claims`
  oauth2      RFC 7662 `introspection_url` + `client_id`/`client_secret`,
              and/or RFC 9068 JWT access tokens through `jwks_url`/`jwks`
Target credential (discriminated by `kind:`):
  oauth2_client_credentials  `token_url`, `client_id`, `client_secret`,
              `scope`, `audience`

Everything a request could trip over is checked here, at configuration time:
URLs (https; http only to loopback), RE2 patterns, algorithm families, an
inline JWKS that yields keys.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

# From the building blocks, not rr_addon.policy.schema: schema assembles this module's kinds.
from rr_addon.policy.base import Model, SecretRef
from rr_addon.policy.credential_base import ProxyCredentialBase, TargetCredentialBase
from rr_addon.policy.identity import HMAC_ALGORITHMS, JwksSettings, check_endpoint_url, compile_pattern, parse_jwks

Algorithm = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "HS256", "HS384", "HS512"
]  # never "none"
DEFAULT_PUBLIC_KEY_ALGORITHMS = ["RS256", "ES256"]
DEFAULT_HMAC_ALGORITHMS = ["HS256"]


class JwksCache(Model):
    """How a `jwks_url` is cached (seconds)."""

    min_ttl: float = Field(60.0, ge=0)  # Cache-Control max-age is clamped into [min_ttl, max_ttl]
    max_ttl: float = Field(86400.0, gt=0)
    default_ttl: float = Field(600.0, gt=0)  # when the endpoint sends no max-age
    refetch_interval: float = Field(30.0, ge=0)  # at most one refetch per interval (unknown kid, failures)
    timeout: float = Field(5.0, gt=0, le=60)

    @model_validator(mode="after")
    def _bounds(self) -> JwksCache:
        if self.min_ttl > self.max_ttl:
            raise ValueError("min_ttl must not exceed max_ttl")
        return self

    def settings(self) -> JwksSettings:
        return JwksSettings(self.min_ttl, self.max_ttl, self.default_ttl, self.refetch_interval, self.timeout)


def _url(value: str | None) -> str | None:
    return None if value is None else check_endpoint_url(value)


def _required_claims(value: dict[str, str]) -> dict[str, str]:
    for name, pattern in value.items():
        if not name:
            raise ValueError("a required claim needs a name")
        compile_pattern(pattern)
    return value


# JWK members that carry secret key material (RFC 7518 §6.2.2, §6.3.2, §6.4).
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth")


def _check_jwks(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    """An inline JWKS is configuration, stored and exported in clear: it may hold
    public keys only. An HMAC key belongs in `secret:`, which is stored encrypted."""
    if doc is None:
        return doc
    keys = doc.get("keys") if isinstance(doc, dict) else None
    for i, jwk in enumerate(keys if isinstance(keys, list) else []):
        if not isinstance(jwk, dict):
            continue
        if jwk.get("kty") == "oct" or "k" in jwk:
            raise ValueError(
                f"keys[{i}] is a symmetric key (kty 'oct'), which is a secret: an inline jwks is stored and exported "
                "in clear; give the HMAC key as 'secret:' (algorithms HS256, HS384 or HS512) instead"
            )
        private = [m for m in _PRIVATE_MEMBERS if m in jwk]
        if private:
            raise ValueError(
                f"keys[{i}] holds private key material ({', '.join(private)}): an inline jwks is stored and exported "
                "in clear, so it may hold public keys only; remove the private members"
            )
    parse_jwks(doc, allow_symmetric=False)
    return doc


def _check_families(algorithms: list[str], *, public_endpoint: bool, inline: bool = False) -> None:
    hmac = [a for a in algorithms if a in HMAC_ALGORITHMS]
    if hmac and public_endpoint:
        raise ValueError(f"{', '.join(hmac)} cannot be verified with keys from a jwks_url (HMAC keys are secrets)")
    if hmac and len(hmac) != len(algorithms):
        raise ValueError("algorithms mixes HMAC (HS*) and public-key algorithms; use one credential for each")
    if hmac and inline:
        raise ValueError(f"{', '.join(hmac)} cannot be verified with an inline jwks (it holds public keys only); use a jwt_verify 'secret:'")


class _Verifying(Model):
    """Fields shared by the credentials that verify JWTs."""

    jwks_url: str | None = None
    jwks: dict[str, Any] | None = None
    algorithms: list[Algorithm] = Field(default_factory=lambda: list(DEFAULT_PUBLIC_KEY_ALGORITHMS), min_length=1)
    leeway: float = Field(60.0, ge=0, le=600)  # seconds of clock skew tolerated on exp, nbf, iat
    required_claims: dict[str, str] = Field(default_factory=dict)  # claim -> RE2 regex (search; anchor with ^ $)
    jwks_cache: JwksCache = Field(default_factory=JwksCache)

    _check_url = field_validator("jwks_url")(lambda cls, v: _url(v))
    _check_claims = field_validator("required_claims")(lambda cls, v: _required_claims(v))
    _check_inline = field_validator("jwks")(lambda cls, v: _check_jwks(v))


class JwtVerifyCaller(_Verifying, ProxyCredentialBase):
    """A JWT verified on every request. `secret` here is the HMAC key (HS*)."""

    verifies: ClassVar[bool] = True
    auth: Literal["jwt_verify"]
    issuer: str = Field(min_length=1)
    audience: str = Field(min_length=1)
    require_exp: bool = True  # a token without exp would be valid forever

    @model_validator(mode="before")
    @classmethod
    def _default_algorithms(cls, data: Any) -> Any:
        if isinstance(data, dict) and "algorithms" not in data and data.get("secret") is not None:
            data = {**data, "algorithms": list(DEFAULT_HMAC_ALGORITHMS)}
        return data

    @model_validator(mode="after")
    def _one_key_source(self) -> JwtVerifyCaller:
        sources = [n for n in ("jwks_url", "jwks", "secret") if getattr(self, n) is not None]
        # HS* algorithms and no key source: the HMAC secret already stored is kept
        # (that is how `rr export` writes such a credential, like every secret).
        if len(sources) > 1 or (not sources and not set(self.algorithms) <= HMAC_ALGORITHMS):
            raise ValueError(
                "a jwt_verify credential needs exactly one of 'jwks_url', 'jwks' or 'secret' "
                "(a stored HMAC credential may omit 'secret' to keep its key: give algorithms HS*)"
            )
        if self.secret is not None and not set(self.algorithms) <= HMAC_ALGORITHMS:
            raise ValueError("with an HMAC 'secret', algorithms may only be HS256, HS384, HS512")
        _check_families(list(self.algorithms), public_endpoint=self.jwks_url is not None, inline=self.jwks is not None)
        return self

    @property
    def uses_hmac_secret(self) -> bool:
        return self.jwks_url is None and self.jwks is None

    @property
    def secret_ref(self) -> Any:
        """The secret to store encrypted (it verifies signatures, so it cannot be a digest)."""
        return self.secret


class OAuth2Caller(_Verifying, ProxyCredentialBase):
    """An OAuth 2.0 access token: introspected (RFC 7662) and/or, when a JWKS
    is given, verified locally as an RFC 9068 JWT access token."""

    verifies: ClassVar[bool] = True
    auth: Literal["oauth2"]
    introspection_url: str | None = None
    client_id: str | None = None
    client_secret: SecretRef | None = Field(None, repr=False)  # omitted on an existing credential: keep the stored one
    client_auth: Literal["basic", "post"] = "basic"
    issuer: str | None = None  # checked when set; required with a JWKS
    audience: str | None = None
    scopes: list[str] = Field(default_factory=list)  # every one must be granted (`scope` claim)
    # Active answers are cached until the token's exp, at most this long: the
    # revocation lag (a token revoked at the IdP keeps working until then).
    # 60 s rather than 300: one introspection per token per minute is cheap,
    # five minutes of a revoked token is not. See docs/identity.md.
    cache_max_ttl: float = Field(60.0, gt=0, le=86400)
    negative_ttl: float = Field(10.0, ge=0, le=300)  # inactive answers
    timeout: float = Field(5.0, gt=0, le=60)

    _check_introspection = field_validator("introspection_url")(lambda cls, v: _url(v))

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, v: list[str]) -> list[str]:
        for s in v:
            if not s or any(c.isspace() for c in s):
                raise ValueError(f"{s!r} is not a scope (non-empty, no spaces)")
        return v

    @model_validator(mode="after")
    def _sources(self) -> OAuth2Caller:
        if self.secret is not None:
            raise ValueError("an oauth2 credential takes 'client_secret', not 'secret'")
        local = self.jwks_url is not None or self.jwks is not None
        if self.jwks_url is not None and self.jwks is not None:
            raise ValueError("give 'jwks_url' or 'jwks', not both")
        if self.introspection_url is None and not local:
            raise ValueError("an oauth2 credential needs 'introspection_url', or 'jwks_url'/'jwks' for JWT access tokens")
        if self.introspection_url is not None and not self.client_id:
            raise ValueError("introspection needs 'client_id' (and 'client_secret')")
        if local and (self.issuer is None or self.audience is None):
            raise ValueError("JWT access tokens (RFC 9068) need 'issuer' and 'audience'")
        if local:
            _check_families(list(self.algorithms), public_endpoint=self.jwks_url is not None, inline=self.jwks is not None)
        return self

    @property
    def secret_ref(self) -> Any:
        return self.client_secret


ClientAuthMethod = Literal["basic", "post", "private_key_jwt", "none"]


class _TokenEndpoint(Model):
    """Fields shared by the upstream OAuth grants: where tokens come from, how
    rr authenticates as a client (rr_addon.identity.client_auth), what it asks for."""

    token_url: str
    client_id: str | None = None
    client_auth: ClientAuthMethod = "basic"
    client_secret: SecretRef | None = Field(None, repr=False)  # basic, post; omitted on an existing credential: keep the stored one
    client_key: SecretRef | None = Field(None, repr=False)  # private_key_jwt: a PEM private key
    client_key_id: str | None = Field(None, min_length=1)  # `kid` of the client assertion
    scope: str | None = None  # space-separated; a list is accepted and joined
    audience: str | None = None
    resource: str | None = None  # RFC 8707
    refresh_skew: float = Field(60.0, ge=0, le=3600)  # refresh this long before the token expires
    timeout: float = Field(10.0, gt=0, le=60)

    _check_url = field_validator("token_url")(lambda cls, v: _url(v))

    @field_validator("scope", mode="before")
    @classmethod
    def _scope(cls, v: Any) -> Any:
        if isinstance(v, list) and all(isinstance(s, str) for s in v):
            return " ".join(v) or None
        return v

    def _check_client(self) -> None:
        kind = getattr(self, "kind", "")
        if self.secret is not None:
            raise ValueError(f"a {kind} credential takes its secrets in named fields (client_secret, …), not 'secret'")
        if self.client_auth != "none" and not self.client_id:
            raise ValueError(f"client_auth {self.client_auth} needs a 'client_id'")
        if self.client_auth in ("basic", "post") and self.client_key is not None:
            raise ValueError(f"client_auth {self.client_auth} authenticates with 'client_secret'; 'client_key' is for private_key_jwt")
        if self.client_auth == "private_key_jwt" and self.client_secret is not None:
            raise ValueError("client_auth private_key_jwt authenticates with 'client_key' (a PEM private key), not 'client_secret'")
        if self.client_auth == "none" and (self.client_secret is not None or self.client_key is not None):
            raise ValueError("client_auth none (a public client) takes neither 'client_secret' nor 'client_key'")
        if self.client_key_id is not None and self.client_auth != "private_key_jwt":
            raise ValueError("'client_key_id' names the key of a private_key_jwt client assertion: set client_auth: private_key_jwt")

    @property
    def client_secret_field(self) -> str | None:
        """The field that holds the client's own secret, if its client_auth uses one."""
        return {"basic": "client_secret", "post": "client_secret", "private_key_jwt": "client_key"}.get(self.client_auth)


class OAuth2ClientCredentials(_TokenEndpoint, TargetCredentialBase):
    """An upstream OAuth access token obtained with the client-credentials
    grant and sent as `Authorization: Bearer <token>`."""

    kind: Literal["oauth2_client_credentials"]
    client_id: str = Field(min_length=1)

    @model_validator(mode="after")
    def _no_plain_secret(self) -> OAuth2ClientCredentials:
        if self.secret is not None:
            raise ValueError("an oauth2_client_credentials credential takes 'client_secret', not 'secret'")
        if self.client_auth == "none":
            raise ValueError("the client-credentials grant needs client authentication: client_auth basic, post or private_key_jwt")
        self._check_client()
        return self

    @property
    def secret_ref(self) -> Any:
        return self.client_key if self.client_auth == "private_key_jwt" else self.client_secret


IDENTITY_PROXY_CREDENTIALS = (JwtVerifyCaller, OAuth2Caller)
IDENTITY_TARGET_CREDENTIALS = (OAuth2ClientCredentials,)
