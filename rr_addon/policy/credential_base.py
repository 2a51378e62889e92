"""What every target credential and every proxy credential has: a name, a
secret reference and rules of its own scope. The kinds (rr_addon.policy.schema,
rr_addon.policy.identity_schema) subclass these."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import ClassVar

from pydantic import Field, field_validator

from rr_addon.policy.base import Effect, Model, Name, SecretRef, _name
from rr_addon.policy.filters_schema import FilterList, RedactList
from rr_addon.policy.rules_schema import RuleList


class TargetCredentialBase(Model):
    name: Name
    secret: SecretRef | None = None  # omitted on an existing credential: keep the stored one
    description: str | None = None
    rules: RuleList = Field(default_factory=list)  # the target-credential scope
    default_effect: Effect = "allow"  # when none of its rules matches
    filters: FilterList = Field(default_factory=list)
    redact: RedactList = Field(default_factory=list)

    _check_name = field_validator("name")(lambda cls, v: _name(v))

    @property
    def needs_secret(self) -> bool:
        return True

    @property
    def secret_ref(self):
        """The secret rr stores (encrypted) for this credential; kinds with another field override this."""
        return self.secret


class ProxyCredentialBase(Model):
    name: Name
    secret: SecretRef | None = None
    active: bool = True
    expires_at: datetime | None = None
    target_credentials: dict[str, str] = Field(default_factory=dict)
    description: str | None = None
    rules: RuleList = Field(default_factory=list)  # the proxy-credential scope
    default_effect: Effect = "allow"  # when none of its rules matches
    filters: FilterList = Field(default_factory=list)
    redact: RedactList = Field(default_factory=list)

    _check_name = field_validator("name")(lambda cls, v: _name(v))

    # Static kinds are stored as keyed digests; kinds that verify tokens keep their
    # secret (an HMAC key, a client secret) encrypted, because they must use it.
    verifies: ClassVar[bool] = False

    @property
    def secret_ref(self):
        return self.secret

    @property
    def needs_secret(self) -> bool:
        return not self.verifies

    @field_validator("expires_at")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            v = v.replace(tzinfo=timezone.utc)
        return v
