"""Every database table of rr (sqlmodel), in one place: importing this module
registers them all on `SQLModel.metadata` (Alembic's env does). The code that
reads and writes a table lives with its store (`store/config_store.py`,
`store/audit_store.py`, `store/dataplanes.py`, `store/approvals.py`,
`store/minted.py`, `store/oauth_grants.py`, `counters/embedded.py`,
`hybrid/registry.py`).

Nested configuration (hosts, rules, filters…) is kept as JSON in `spec`;
secrets only as Fernet ciphertext (upstream secrets) or keyed digests (caller
secrets). Schema changes go through Alembic migrations in
`rr_addon/store/migrations`."""

from __future__ import annotations

from datetime import datetime, timezone

from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Float, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
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
    # random, renewed whenever the credential is created or its secret or kind changes:
    # minted tokens carry it, so such a change voids them (rr_addon.core.tokens)
    generation: str | None = None
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


# --------------------------------------------------------------------
# Meter counters of the embedded backend (migration 0002): one row per live counter


class CounterRow(SQLModel, table=True):
    __tablename__ = "rr_counter"
    key: str = Field(sa_column=Column(String(255), primary_key=True))
    value: int = Field(sa_column=Column(BigInteger, nullable=False))
    # Epoch seconds when the counter's window ends; pruned after.
    expires_at: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))


# --------------------------------------------------------------------
# The audit trail (migration 0003; rr_addon.store.audit_store)


class AuditRow(SQLModel, table=True):
    """One request. Never secrets, bodies or query values (see `audit.records.FIELDS`)."""

    __tablename__ = "rr_audit"
    # BIGINT on PostgreSQL (years of traffic); SQLite's rowid alias must be INTEGER.
    id: int | None = Field(
        default=None, sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    )
    ts: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))
    request_id: str = Field(sa_column=Column(String, nullable=False, unique=True))
    result: str = Field(sa_column=Column(String, nullable=False))
    status: int | None = None
    code: str | None = Field(default=None, sa_column=Column(String, nullable=True, index=True))
    reason: str | None = None
    scope: str | None = None
    rule: str | None = None
    proxy: str | None = Field(default=None, sa_column=Column(String, nullable=True, index=True))
    credential: str | None = None
    channel: str | None = None
    target: str | None = None
    target_credential: str | None = None
    method: str | None = None
    scheme: str | None = None
    host: str | None = None
    port: int | None = None
    path: str | None = None
    client: str | None = None
    bytes_in: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    bytes_out: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    latency_ms: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    decision_ms: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    config_version: int | None = None
    dataplane: str | None = None
    meters: Any = Field(default=None, sa_column=Column(JSON, nullable=True))
    redactions: Any = Field(default=None, sa_column=Column(JSON, nullable=True))
    extra: Any = Field(default=None, sa_column=Column(JSON, nullable=True))  # record fields without a column


# --------------------------------------------------------------------
# The data-plane registry (migration 0003; rr_addon.store.dataplanes)


class DataPlaneRow(SQLModel, table=True):
    __tablename__ = "rr_dataplane"
    id: str = Field(sa_column=Column(String, primary_key=True))
    hostname: str
    pid: int
    listen: str | None = None  # "127.0.0.1:8081" (comma-separated when several)
    started_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    heartbeat_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))
    config_version: int | None = None
    rr_version: str | None = None
    stats: Any = Field(default=None, sa_column=Column(JSON, nullable=True))  # {"requests": n, "audit_dropped": n, …}


# --------------------------------------------------------------------
# Pending approvals (migration 0009; rr_addon.store.approvals)


class ApprovalRow(SQLModel, table=True):
    __tablename__ = "rr_approval"
    request_id: str = Field(sa_column=Column(String, primary_key=True))
    state: str = Field(sa_column=Column(String, nullable=False, index=True))
    dataplane: str
    proxy: str
    credential: str
    target: str | None = None
    target_credential: str | None = None
    method: str
    url: str
    scope: str
    rule: str
    body_preview: str = Field(default="", sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))
    decided_by: str | None = None
    decided_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    note: str | None = None


# --------------------------------------------------------------------
# The control plane (migration 0007; rr_addon.hybrid.registry): key material
# (Fernet-encrypted), the data planes it issued, admin tokens, reported counters


class ControlPlaneState(SQLModel, table=True):
    __tablename__ = "rr_cp_state"
    id: int = Field(default=1, primary_key=True)
    ca_cert: str
    ca_key_enc: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    signing_key_enc: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class IssuedDataPlane(SQLModel, table=True):
    __tablename__ = "rr_cp_dataplane"
    name: str = Field(sa_column=Column(String, primary_key=True))
    cert_sha256: str = Field(sa_column=Column(String, nullable=False, unique=True))
    seal_public: str  # X25519 public key, base64: configuration is sealed to it
    issued_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))


class AdminToken(SQLModel, table=True):
    __tablename__ = "rr_cp_admin"
    name: str = Field(sa_column=Column(String, primary_key=True))
    token_sha256: str = Field(sa_column=Column(String, nullable=False, unique=True))
    issued_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))


class UsageReset(SQLModel, table=True):
    """`rr usage reset` on the control plane (migration 0010): hybrid data planes
    learn of it in their heartbeat answer and apply it once per counting scope
    (rr_addon.hybrid.resets)."""

    __tablename__ = "rr_cp_usage_reset"
    id: int | None = Field(default=None, primary_key=True)
    uid: str = Field(sa_column=Column(String(64), nullable=False, unique=True))  # random: names the data planes' marker (ids repeat across databases)
    prefixes: str = Field(sa_column=Column(Text, nullable=False))  # JSON list of counter key prefixes
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))


class ReportedCounter(SQLModel, table=True):
    """The latest value of one meter counter in one counting scope: a data plane's
    own counters, or a Redis shared by the data planes of one region."""

    __tablename__ = "rr_cp_usage"
    scope: str = Field(sa_column=Column(String, primary_key=True))
    key: str = Field(sa_column=Column(String(255), primary_key=True))
    value: int = Field(sa_column=Column(BigInteger, nullable=False))
    expires_at: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    dataplane: str = Field(sa_column=Column(String, nullable=False))  # the last one that reported it
    reported_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
