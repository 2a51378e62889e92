"""Database tables (sqlmodel). Nested configuration (hosts, rules, filters…)
is kept as JSON in `spec`; secrets only as Fernet ciphertext (upstream secrets)
or keyed digests (caller secrets). Schema changes go through Alembic
migrations in `rr_addon/store/migrations`."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import JSON, Column, DateTime, ForeignKey, Integer, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class ConfigState(SQLModel, table=True):
    """One row: the configuration version data planes follow, and key material."""

    __tablename__ = "rr_config_state"
    id: int = Field(default=1, primary_key=True)
    version: int = 0
    updated_at: datetime = Field(default_factory=utcnow)
    applied_from: str | None = None
    hmac_key_enc: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class TargetRow(SQLModel, table=True):
    __tablename__ = "rr_target"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    spec: dict = Field(sa_column=Column(JSON, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow)


class TargetCredentialRow(SQLModel, table=True):
    __tablename__ = "rr_target_credential"
    __table_args__ = (UniqueConstraint("target_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    target_id: int = Field(sa_column=Column(Integer, ForeignKey("rr_target.id", ondelete="CASCADE"), nullable=False, index=True))
    name: str
    kind: str
    spec: dict = Field(sa_column=Column(JSON, nullable=False))
    secret_enc: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    secret_source: str | None = None  # "env:NAME", "file:PATH" or "literal": where apply read it
    updated_at: datetime = Field(default_factory=utcnow)


class ProxyRow(SQLModel, table=True):
    __tablename__ = "rr_proxy"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    spec: dict = Field(sa_column=Column(JSON, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow)


class ProxyCredentialRow(SQLModel, table=True):
    __tablename__ = "rr_proxy_credential"
    __table_args__ = (UniqueConstraint("proxy_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    proxy_id: int = Field(sa_column=Column(Integer, ForeignKey("rr_proxy.id", ondelete="CASCADE"), nullable=False, index=True))
    name: str
    auth: str
    spec: dict = Field(sa_column=Column(JSON, nullable=False))
    secret_digest: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))  # static kinds
    secret_enc: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))  # kinds that verify tokens
    secret_source: str | None = None
    updated_at: datetime = Field(default_factory=utcnow)


class MintedTokenRow(SQLModel, table=True):
    """A minted token's record (`rr token list`, `rr token revoke`). The token
    itself is never stored: data planes verify its signature offline and read
    only the ids revoked here (rr_addon.core.tokens)."""

    __tablename__ = "rr_minted_token"
    id: str = Field(primary_key=True)
    proxy: str
    credential: str
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))
    spec: dict = Field(sa_column=Column(JSON, nullable=False))  # targets, allow: what it narrows to
    note: str = ""
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))


class OAuthRefreshTokenRow(SQLModel, table=True):
    """The newest refresh token of an `oauth2_refresh_token` target credential,
    encrypted (rr_addon.store.oauth_grants). Rotations write it here, not in the
    credential's row: they do not change the configuration, only its state.
    `seed_digest` identifies the refresh token last applied (a new one replaces
    the rotated token; an old one, from a data plane not yet reloaded, does not).
    A lease lets one data plane at a time spend the token."""

    __tablename__ = "rr_oauth_refresh_token"
    __table_args__ = (UniqueConstraint("target", "credential"),)
    id: int | None = Field(default=None, primary_key=True)
    target: str
    credential: str
    seed_digest: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    retired_seeds: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))  # hex digests
    token_enc: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    generation: int = 0
    lease_holder: str | None = None
    lease_until: float | None = None  # epoch seconds
    rotated_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
