"""The only code that reads and writes the control plane's tables (migration
0007, defined in `rr_addon.store.tables`): its key material, the data planes it issued (their client
certificate's fingerprint and their sealing public key), admin tokens, and the
meter counters data planes report.

Key material is stored Fernet-encrypted under the master key, like upstream
secrets, so control-plane replicas sharing one database share one CA."""

from __future__ import annotations

import hashlib
import json
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import case, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from rr_addon.crypto import Keyring
from rr_addon.hybrid import pki, sealing
from rr_addon.store.tables import AdminToken, ControlPlaneState, IssuedDataPlane, ReportedCounter, UsageReset


def _now() -> datetime:
    return datetime.now(timezone.utc)


# ---------------------------------------------------------------------------
# Key material


@dataclass(frozen=True)
class Keys:
    ca: pki.CA
    signer: Ed25519PrivateKey

    @property
    def ca_pem(self) -> bytes:
        return pki.cert_pem(self.ca.cert)


def keys(engine: Engine, keyring: Keyring) -> Keys:
    """The control plane's CA and signing key, created on first use.

    Replicas sharing a database may start together: each makes a candidate and
    inserts it only if no row exists (the primary key id=1 decides, ON CONFLICT
    DO NOTHING), then every one of them reads back the row that won, so they all
    serve one CA and one signing key."""
    table = ControlPlaneState.__table__
    with engine.connect() as conn:
        row = conn.execute(select(table).where(table.c.id == 1)).first()
    if row is None:
        ca = pki.CA.create()
        signer = Ed25519PrivateKey.generate()
        candidate = dict(id=1, ca_cert=pki.cert_pem(ca.cert).decode(), ca_key_enc=keyring.encrypt(pki.key_pem(ca.key)),
                         signing_key_enc=keyring.encrypt(sealing.raw_private(signer)), created_at=_now())
        insert = (postgresql if engine.dialect.name == "postgresql" else sqlite).insert(table)
        with engine.begin() as conn:
            conn.execute(insert.on_conflict_do_nothing(index_elements=["id"]), [candidate])
        with engine.connect() as conn:
            row = conn.execute(select(table).where(table.c.id == 1)).first()
        if row is None:
            raise RuntimeError("the control plane's key material was neither found nor created")
    m = row._mapping
    ca = pki.CA.load(m["ca_cert"].encode(), keyring.decrypt(m["ca_key_enc"]))
    return Keys(ca, Ed25519PrivateKey.from_private_bytes(keyring.decrypt(m["signing_key_enc"])))


# ---------------------------------------------------------------------------
# Data planes


_DP = IssuedDataPlane.__table__


def issue(engine: Engine, name: str, cert_sha256: str, seal_public: bytes, *, replace: bool) -> bool:
    """Register (or, with `replace`, re-issue) data plane `name`. False if it exists and not `replace`."""
    row = dict(name=name, cert_sha256=cert_sha256, seal_public=sealing.b64(seal_public), issued_at=_now(), revoked_at=None)
    with engine.begin() as conn:
        exists = conn.execute(select(_DP.c.name).where(_DP.c.name == name)).first() is not None
        if exists and not replace:
            return False
        conn.execute(delete(_DP).where(_DP.c.name == name))
        conn.execute(_DP.insert(), [row])
    return True


def revoke(engine: Engine, name: str) -> str:
    """'revoked', 'already revoked' or 'unknown'."""
    with engine.begin() as conn:
        row = conn.execute(select(_DP.c.revoked_at).where(_DP.c.name == name)).first()
        if row is None:
            return "unknown"
        if row[0] is not None:
            return "already revoked"
        conn.execute(update(_DP).where(_DP.c.name == name).values(revoked_at=_now()))
    return "revoked"


@dataclass(frozen=True)
class Member:
    name: str
    seal_public: bytes
    revoked: bool


def by_fingerprint(engine: Engine, cert_sha256: str) -> Member | None:
    with engine.connect() as conn:
        row = conn.execute(select(_DP).where(_DP.c.cert_sha256 == cert_sha256)).first()
    if row is None:
        return None
    m = row._mapping
    return Member(m["name"], sealing.unb64(m["seal_public"]), m["revoked_at"] is not None)


def listing(engine: Engine) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(select(_DP).order_by(_DP.c.name)).all()
    return [
        {
            "name": r.name,
            "issued_at": _utc(r.issued_at).isoformat(timespec="seconds"),
            "revoked_at": _utc(r.revoked_at).isoformat(timespec="seconds") if r.revoked_at else None,
            "cert_sha256": r.cert_sha256,
        }
        for r in rows
    ]


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


# ---------------------------------------------------------------------------
# Admin tokens


_ADMIN = AdminToken.__table__
ADMIN_PREFIX = "rra_"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()  # 256 random bits: no slow hash needed


def issue_admin(engine: Engine, name: str, *, replace: bool) -> str | None:
    """A new admin token for `name` (shown once; only its digest is kept), or None if `name` exists."""
    token = ADMIN_PREFIX + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        exists = conn.execute(select(_ADMIN.c.name).where(_ADMIN.c.name == name)).first() is not None
        if exists and not replace:
            return None
        conn.execute(delete(_ADMIN).where(_ADMIN.c.name == name))
        conn.execute(_ADMIN.insert(), [dict(name=name, token_sha256=_digest(token), issued_at=_now(), revoked_at=None)])
    return token


def revoke_admin(engine: Engine, name: str) -> str:
    with engine.begin() as conn:
        n = conn.execute(update(_ADMIN).where(_ADMIN.c.name == name, _ADMIN.c.revoked_at.is_(None)).values(revoked_at=_now())).rowcount
        if n:
            return "revoked"
        return "already revoked" if conn.execute(select(_ADMIN.c.name).where(_ADMIN.c.name == name)).first() else "unknown"


def admin_for(engine: Engine, token: str) -> str | None:
    """The admin a token belongs to (not revoked), else None."""
    digest = _digest(token)
    with engine.connect() as conn:
        rows = conn.execute(select(_ADMIN.c.name, _ADMIN.c.token_sha256).where(_ADMIN.c.revoked_at.is_(None))).all()
    for name, stored in rows:
        if hmac.compare_digest(stored, digest):
            return name
    return None


# ---------------------------------------------------------------------------
# Reported usage


_USAGE = ReportedCounter.__table__


def report_usage(engine: Engine, scope: str, dataplane: str, counters: dict[str, tuple[int, int]]) -> None:
    """Store the latest value of each counter of `scope` (idempotent: a report repeats absolute values)."""
    if not counters:
        return
    now = _now()
    rows = [dict(scope=scope, key=k, value=int(v), expires_at=int(e), dataplane=dataplane, reported_at=now) for k, (v, e) in counters.items()]
    insert = (postgresql if engine.dialect.name == "postgresql" else sqlite).insert(_USAGE)
    value = insert.excluded.value
    if not scope.startswith("dataplane:"):
        # a scope several data planes share (one Redis): any of them may report it, so none can lower
        # what another reported (a window's count only grows; a reset deletes the rows first)
        value = case((insert.excluded.value > _USAGE.c.value, insert.excluded.value), else_=_USAGE.c.value)
    stmt = insert.on_conflict_do_update(
        index_elements=["scope", "key"],
        set_={"value": value, "expires_at": insert.excluded.expires_at, "dataplane": insert.excluded.dataplane, "reported_at": insert.excluded.reported_at},
    )
    with engine.begin() as conn:
        conn.execute(stmt, rows)
        conn.execute(delete(_USAGE).where(_USAGE.c.expires_at < int(now.timestamp())))


def reported_counts(engine: Engine, now: float) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """(the sum over scopes per live counter key, {scope: {key: value}})."""
    with engine.connect() as conn:
        rows = conn.execute(select(_USAGE.c.scope, _USAGE.c.key, _USAGE.c.value).where(_USAGE.c.expires_at > int(now))).all()
    total: dict[str, int] = {}
    by_scope: dict[str, dict[str, int]] = {}
    for scope, key, value in rows:
        total[key] = total.get(key, 0) + value
        by_scope.setdefault(scope, {})[key] = value
    return total, by_scope


# ---------------------------------------------------------------------------
# Usage resets for hybrid data planes


_RESET = UsageReset.__table__
RESET_HORIZON = 35 * 86400  # the longest window (a month) and then some: older resets touch no live counter


def record_reset(engine: Engine, prefixes: list[str]) -> int:
    """Note a `rr usage reset` for hybrid data planes and drop the copies they
    reported (the control plane's `rr usage` agrees at once); the new reset's id."""
    now = _now()
    with engine.begin() as conn:
        rid = conn.execute(_RESET.insert().values(uid=secrets.token_hex(16), prefixes=json.dumps(prefixes), created_at=now)).inserted_primary_key[0]
        for prefix in prefixes:
            conn.execute(delete(_USAGE).where(_USAGE.c.key.startswith(prefix, autoescape=True)))
        conn.execute(delete(_RESET).where(_RESET.c.created_at < datetime.fromtimestamp(now.timestamp() - RESET_HORIZON, timezone.utc)))
    return int(rid)


def resets_after(engine: Engine, after: int | None) -> list[dict]:
    """The resets (of the last RESET_HORIZON) a data plane that applied up to `after` has yet to see."""
    since = datetime.fromtimestamp(_now().timestamp() - RESET_HORIZON, timezone.utc)
    stmt = select(_RESET.c.id, _RESET.c.uid, _RESET.c.prefixes).where(_RESET.c.created_at >= since).order_by(_RESET.c.id)
    if after is not None:
        stmt = stmt.where(_RESET.c.id > int(after))
    with engine.connect() as conn:
        return [{"id": int(i), "uid": u, "prefixes": json.loads(p)} for i, u, p in conn.execute(stmt).all()]
