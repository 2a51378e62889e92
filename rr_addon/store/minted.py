"""Records of minted tokens: what `rr token list` shows and `rr token revoke`
marks. Revoking bumps the configuration version (and notifies, on PostgreSQL),
so every data plane reloads its snapshot — which carries the revoked ids that
have not expired yet — within the reload interval."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import select

from rr_addon.core import tokens
from rr_addon.store import notify
from rr_addon.store.db import session
from rr_addon.store.tables import ConfigState, MintedTokenRow, utcnow


def record(engine: Engine, token: tokens.Token, note: str = "") -> None:
    spec = {"targets": list(token.targets), "allow": [f"{a.method} {a.path}" for a in token.allow], "max_requests": token.max_requests,
            "subject": token.subject}
    with session(engine) as s:
        s.add(MintedTokenRow(
            id=token.id, proxy=token.proxy, credential=token.credential,
            expires_at=datetime.fromtimestamp(token.expires_at, timezone.utc), spec=spec, note=note,
        ))
        s.commit()


def listing(engine: Engine) -> list[dict]:
    with session(engine) as s:
        rows = s.exec(select(MintedTokenRow).order_by(MintedTokenRow.created_at, MintedTokenRow.id)).all()
        now = utcnow()
        return [
            {
                "id": r.id,
                "proxy": r.proxy,
                "credential": r.credential,
                "targets": r.spec.get("targets", []),
                "allow": r.spec.get("allow", []),
                "max_requests": r.spec.get("max_requests"),
                "subject": r.spec.get("subject"),
                "note": r.note,
                "created_at": _utc(r.created_at).isoformat(timespec="seconds"),
                "expires_at": _utc(r.expires_at).isoformat(timespec="seconds"),
                "state": "revoked" if r.revoked_at else "expired" if _utc(r.expires_at) <= now else "active",
            }
            for r in rows
        ]


def revoke(engine: Engine, token_id: str) -> str:
    """'revoked', 'already revoked', or 'unknown'."""
    with session(engine) as s:
        row = s.get(MintedTokenRow, token_id)
        if row is None:
            return "unknown"
        if row.revoked_at is not None:
            return "already revoked"
        row.revoked_at = utcnow()
        # a new configuration version: data planes reload and pick up the revocation
        s.execute(update(ConfigState).where(ConfigState.id == 1).values(version=ConfigState.version + 1, updated_at=utcnow()))
        version = s.get(ConfigState, 1).version
        notify.notify_change(s, version)
        s.commit()
        return "revoked"


def revoked_ids(s) -> frozenset[str]:
    """Revoked tokens that have not expired (an expired one is refused anyway)."""
    rows = s.exec(select(MintedTokenRow.id).where(MintedTokenRow.revoked_at.is_not(None), MintedTokenRow.expires_at > utcnow()))
    return frozenset(rows)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value
