"""Pending approvals in the configuration database (docs/approvals.md).

A data plane that holds a request inserts a `pending` row; a person decides
it from any process that reaches the database (`rr approve` / `rr deny`), or
the data plane itself closes it (mitmweb's resume or kill, time-out, the
client leaving, shutdown). Every change of state is one conditional UPDATE
from `pending`, so the first decision wins and a late one is told what
happened instead of being applied. Nothing here is a secret: the URL has no
injected value (that is added only after approval) and the body preview is
masked (rr_addon.core.preview).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterable

from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from rr_addon.store.tables import ApprovalRow

PENDING = "pending"
APPROVED = "approved"
DENIED = "denied"
TIMED_OUT = "timed-out"
WITHDRAWN = "withdrawn"  # the client went away while the request was held
ABANDONED = "abandoned"  # rr stopped (or could not keep it) while the request was held
STATES = (PENDING, APPROVED, DENIED, TIMED_OUT, WITHDRAWN, ABANDONED)


TABLE = ApprovalRow.__table__


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


@dataclass(frozen=True)
class Closed:
    """How a held request ended, as the database has it."""

    state: str
    by: str | None = None
    at: datetime | None = None
    note: str | None = None


# ---------------------------------------------------------------------------
# The data plane (synchronous: it runs these in a thread)


def record(engine: Engine, row: dict, timeout: float) -> None:
    now = _now()
    with engine.begin() as conn:
        conn.execute(TABLE.insert().values(**row, state=PENDING, created_at=now, expires_at=now + timedelta(seconds=timeout)))


def decisions(engine: Engine, request_ids: Iterable[str]) -> dict[str, Closed]:
    """The requests among `request_ids` that are no longer pending, and how they ended."""
    ids = list(request_ids)
    if not ids:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(
            select(TABLE.c.request_id, TABLE.c.state, TABLE.c.decided_by, TABLE.c.decided_at, TABLE.c.note).where(
                TABLE.c.request_id.in_(ids), TABLE.c.state != PENDING
            )
        ).all()
    return {r.request_id: Closed(r.state, r.decided_by, _utc(r.decided_at), r.note) for r in rows}


def close(engine: Engine, request_id: str, state: str, by: str | None = None, note: str | None = None) -> Closed:
    """Move a pending request to `state`; if it was no longer pending, how it had ended instead."""
    now = _now()
    with engine.begin() as conn:
        done = conn.execute(
            update(TABLE).where(TABLE.c.request_id == request_id, TABLE.c.state == PENDING).values(state=state, decided_by=by, decided_at=now, note=note)
        ).rowcount
        if done:
            return Closed(state, by, now, note)
        row = conn.execute(select(TABLE.c.state, TABLE.c.decided_by, TABLE.c.decided_at, TABLE.c.note).where(TABLE.c.request_id == request_id)).first()
    if row is None:  # the row vanished (someone deleted it): nobody approved it
        return Closed(ABANDONED, None, now, "the pending approval disappeared from the database")
    return Closed(row.state, row.decided_by, _utc(row.decided_at), row.note)


def abandon(engine: Engine, request_ids: Iterable[str], note: str) -> None:
    ids = list(request_ids)
    if ids:
        with engine.begin() as conn:
            conn.execute(
                update(TABLE).where(TABLE.c.request_id.in_(ids), TABLE.c.state == PENDING).values(state=ABANDONED, decided_at=_now(), note=note)
            )


# ---------------------------------------------------------------------------
# People (`rr approvals`, `rr approve`, `rr deny`)


def listing(engine: Engine, *, now: datetime | None = None) -> list[dict]:
    """Pending requests that have not expired, oldest first."""
    now = now or _now()
    with engine.connect() as conn:
        rows = conn.execute(select(TABLE).where(TABLE.c.state == PENDING, TABLE.c.expires_at > now).order_by(TABLE.c.created_at)).all()
    out = []
    for r in rows:
        created, expires = _utc(r.created_at), _utc(r.expires_at)
        out.append(
            {
                "request_id": r.request_id,
                "proxy": r.proxy,
                "credential": r.credential,
                "target": r.target,
                "target_credential": r.target_credential,
                "method": r.method,
                "url": r.url,
                "scope": r.scope,
                "rule": r.rule,
                "body_preview": r.body_preview,
                "dataplane": r.dataplane,
                "created_at": created.isoformat(timespec="seconds"),
                "expires_at": expires.isoformat(timespec="seconds"),
                "age_seconds": max(0, int((now - created).total_seconds())),
                "expires_in_seconds": max(0, int((expires - now).total_seconds())),
            }
        )
    return out


def decide(engine: Engine, request_id: str, state: str, by: str, note: str | None) -> tuple[bool, Closed | None]:
    """A person's decision. (True, Closed) when it was applied; (False, how it had ended)
    when the request was no longer pending or had expired; (False, None) when unknown."""
    assert state in (APPROVED, DENIED)
    now = _now()
    with engine.begin() as conn:
        done = conn.execute(
            update(TABLE)
            .where(TABLE.c.request_id == request_id, TABLE.c.state == PENDING, TABLE.c.expires_at > now)
            .values(state=state, decided_by=by, decided_at=now, note=note)
        ).rowcount
        if done:
            return True, Closed(state, by, now, note)
        row = conn.execute(select(TABLE.c.state, TABLE.c.decided_by, TABLE.c.decided_at, TABLE.c.note).where(TABLE.c.request_id == request_id)).first()
    if row is None:
        return False, None
    state_now = TIMED_OUT if row.state == PENDING else row.state  # pending but past its time: the data plane is about to time it out
    return False, Closed(state_now, row.decided_by, _utc(row.decided_at), row.note)
