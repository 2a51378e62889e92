"""The configuration language (docs/policy.md) as pydantic models.

These models validate one YAML document's shape and types; references between
objects are checked in `rr_addon.config.validate`. They are pure data (no I/O),
so the policy core may compile them.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import AfterValidator, Field, field_validator, model_validator

from rr_addon.policy.base import (  # noqa: F401  (re-exported: the language's building blocks)
    HEADER_RE,
    NAME_RE,
    Effect,
    EnvSecret,
    ExecSecret,
    FileSecret,
    Model,
    Name,
    SecretRef,
    _header_name,
    _name,
)
from rr_addon.policy.credential_base import ProxyCredentialBase, TargetCredentialBase
from rr_addon.policy.filters_schema import FilterList, RedactList, ValidateList
from rr_addon.policy.identity_schema import JwtVerifyCaller, OAuth2Caller, OAuth2ClientCredentials
from rr_addon.policy.oauth_grants_schema import OAuth2JwtBearer, OAuth2RefreshToken
from rr_addon.policy.meters_schema import MeterList
from rr_addon.policy.rules_schema import Rule, RuleList  # noqa: F401
from rr_addon.policy.hosts import parse_host_pattern


def _basic_username(v: str) -> str:
    if ":" in v:  # Basic sends "user:password": the first ':' ends the user (RFC 7617)
        raise ValueError("a basic username cannot contain ':'")
    return v


BasicUsername = Annotated[str, Field(min_length=1), AfterValidator(_basic_username)]
"""The `username` of a basic credential (sent upstream) or caller (checked)."""


class ApiKeyCredential(TargetCredentialBase):
    kind: Literal["api_key"]
    header: str | None = None
    query: str | None = None

    @model_validator(mode="after")
    def _one_place(self) -> ApiKeyCredential:
        if (self.header is None) == (self.query is None):
            raise ValueError("an api_key credential needs exactly one of 'header' or 'query'")
        if self.header is not None:
            _header_name(self.header)
        return self


class BearerCredential(TargetCredentialBase):
    kind: Literal["bearer"]


class BasicCredential(TargetCredentialBase):
    kind: Literal["basic"]
    username: BasicUsername


class JwtCredential(TargetCredentialBase):
    """A static JWT sent as `Authorization: Bearer <jwt>` (or in `header`)."""

    kind: Literal["jwt"]
    header: str = "Authorization"
    prefix: str = "Bearer "

    _check_header = field_validator("header")(lambda cls, v: _header_name(v))


class CustomCredential(TargetCredentialBase):
    """Header (and query) templates; `{secret}` is replaced by the secret."""

    kind: Literal["custom"]
    headers: dict[str, str] = Field(default_factory=dict)
    query: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _templates(self) -> CustomCredential:
        if not self.headers and not self.query:
            raise ValueError("a custom credential needs 'headers' or 'query' templates")
        for name in self.headers:
            _header_name(name)
        for name, template in {**self.headers, **self.query}.items():
            try:
                template.format(secret="")
            except (KeyError, IndexError, ValueError) as e:
                raise ValueError(f"template for {name!r} may only use {{secret}} ({e})") from None
        return self


class NoneCredential(TargetCredentialBase):
    kind: Literal["none"]

    @property
    def needs_secret(self) -> bool:
        return False


TargetCredential = Annotated[
    Union[ApiKeyCredential, BearerCredential, BasicCredential, JwtCredential, CustomCredential, NoneCredential, OAuth2ClientCredentials, OAuth2RefreshToken, OAuth2JwtBearer],
    Field(discriminator="kind"),
]


class Target(Model):
    name: Name
    hosts: list[str] = Field(min_length=1)
    schemes: list[Literal["https", "http"]] = Field(default_factory=lambda: ["https"])
    default_effect: Effect = "allow"
    allow_private_addresses: bool = False
    allow_path_parameters: bool = False  # `;` parameters in path segments (refused otherwise, docs/security.md)
    allow_encoded_slashes: bool = False  # `%2F` kept as a literal within a segment (refused otherwise)
    caller_headers: list[str] = Field(default_factory=list)
    credentials: list[TargetCredential] = Field(default_factory=list)
    rules: RuleList = Field(default_factory=list)
    filters: FilterList = Field(default_factory=list)
    redact: RedactList = Field(default_factory=list)
    validate_: ValidateList = Field(default_factory=list, alias="validate")
    description: str | None = None

    _check_name = field_validator("name")(lambda cls, v: _name(v))

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, hosts: list[str]) -> list[str]:
        for h in hosts:
            parse_host_pattern(h)
        return hosts

    @field_validator("caller_headers")
    @classmethod
    def _caller_headers(cls, names: list[str]) -> list[str]:
        for n in names:
            _header_name(n)
            if n.lower() in ("proxy-authorization", "x-rr-authorization", "authorization", "host", "cookie"):
                raise ValueError(f"{n!r} cannot be a caller header")
        return names


# --------------------------------------------------------------------------
# Proxies and their credentials (caller identities).


class ApiKeyCaller(ProxyCredentialBase):
    auth: Literal["api_key"]


class BearerCaller(ProxyCredentialBase):
    auth: Literal["bearer"]


class JwtCaller(ProxyCredentialBase):
    """A static JWT string compared like a bearer token (not verified; see jwt_verify)."""

    auth: Literal["jwt"]


class BasicCaller(ProxyCredentialBase):
    auth: Literal["basic"]
    username: BasicUsername


ProxyCredential = Annotated[
    Union[ApiKeyCaller, BearerCaller, JwtCaller, BasicCaller, JwtVerifyCaller, OAuth2Caller],
    Field(discriminator="auth"),
]


class ProxyTarget(Model):
    target: Name
    credential: str | None = None  # omitted: the target's only credential, if it has exactly one


class Proxy(Model):
    name: Name
    active: bool = True
    mode: Literal["enforce", "report"] = "enforce"
    default_effect: Effect = "allow"
    targets: list[ProxyTarget] = Field(default_factory=list)
    credentials: list[ProxyCredential] = Field(default_factory=list)
    rules: RuleList = Field(default_factory=list)
    meters: MeterList = Field(default_factory=list)
    filters: FilterList = Field(default_factory=list)
    redact: RedactList = Field(default_factory=list)
    validate_: ValidateList = Field(default_factory=list, alias="validate")
    description: str | None = None

    _check_name = field_validator("name")(lambda cls, v: _name(v))


class Config(Model):
    targets: list[Target] = Field(default_factory=list)
    proxies: list[Proxy] = Field(default_factory=list)
