"""Pending approvals in the configuration database (docs/approvals.md).

A data plane that holds a request inserts a `pending` row; a person decides
it from any process that reaches the database (`rr approve` / `rr deny`), or
the data plane itself closes it (mitmweb's resume or kill, time-out, the
client leaving, shutdown). Every change of state is one conditional UPDATE
from `pending`, so the first decision wins and a late one is told what
happened instead of being applied. Nothing here is a secret: the URL has no
injected value (that is added only after approval) and the body preview is
masked (rr_addon.core.preview).

A hybrid control plane keeps the rows of its data planes (rr_addon.hybrid.
approvals): `owner` then limits what a data plane reads and closes to the rows
it created (its `dataplane` column is `NAME/<instance>`, NAME from its
certificate).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterable

from sqlalchemy import and_, select, true, update
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


def _owned(owner: str | None):
    """Rows of data plane `owner` (None: every row)."""
    return true() if owner is None else TABLE.c.dataplane.startswith(f"{owner}/", autoescape=True)


# ---------------------------------------------------------------------------
# The data plane (synchronous: it runs these in a thread)


def record(engine: Engine, row: dict, timeout: float) -> None:
    now = _now()
    with engine.begin() as conn:
        conn.execute(TABLE.insert().values(**row, state=PENDING, created_at=now, expires_at=now + timedelta(seconds=timeout)))


def decisions(engine: Engine, request_ids: Iterable[str], owner: str | None = None) -> dict[str, Closed]:
    """The requests among `request_ids` that are no longer pending, and how they ended."""
    ids = list(request_ids)
    if not ids:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(
            select(TABLE.c.request_id, TABLE.c.state, TABLE.c.decided_by, TABLE.c.decided_at, TABLE.c.note).where(
                TABLE.c.request_id.in_(ids), TABLE.c.state != PENDING, _owned(owner)
            )
        ).all()
    return {r.request_id: Closed(r.state, r.decided_by, _utc(r.decided_at), r.note) for r in rows}


def close(engine: Engine, request_id: str, state: str, by: str | None = None, note: str | None = None, owner: str | None = None) -> Closed:
    """Move a pending request to `state`; if it was no longer pending, how it had ended instead."""
    now = _now()
    mine = and_(TABLE.c.request_id == request_id, _owned(owner))
    with engine.begin() as conn:
        done = conn.execute(
            update(TABLE).where(mine, TABLE.c.state == PENDING).values(state=state, decided_by=by, decided_at=now, note=note)
        ).rowcount
        if done:
            return Closed(state, by, now, note)
        row = conn.execute(select(TABLE.c.state, TABLE.c.decided_by, TABLE.c.decided_at, TABLE.c.note).where(mine)).first()
    if row is None:  # the row vanished (someone deleted it): nobody approved it
        return Closed(ABANDONED, None, now, "the pending approval disappeared from the database")
    return Closed(row.state, row.decided_by, _utc(row.decided_at), row.note)


def abandon(engine: Engine, request_ids: Iterable[str], note: str, owner: str | None = None) -> None:
    ids = list(request_ids)
    if ids:
        with engine.begin() as conn:
            conn.execute(
                update(TABLE).where(TABLE.c.request_id.in_(ids), TABLE.c.state == PENDING, _owned(owner)).values(state=ABANDONED, decided_at=_now(), note=note)
            )


class DatabaseLedger:
    """Where a data plane with a database keeps its holds (rr_addon.mitm.approvals);
    a hybrid data plane uses rr_addon.hybrid.approvals.RemoteLedger instead."""

    where = "the database"
    unavailable = None  # the refusal's detail when the pending row cannot be written

    def __init__(self, engine: Engine):
        self.engine = engine

    def record(self, row: dict, timeout: float) -> None:
        record(self.engine, row, timeout)

    def decisions(self, request_ids: Iterable[str]) -> dict[str, Closed]:
        return decisions(self.engine, request_ids)

    def close(self, request_id: str, state: str, by: str | None, note: str | None) -> Closed:
        return close(self.engine, request_id, state, by, note)

    def abandon(self, request_ids: Iterable[str], note: str) -> None:
        abandon(self.engine, request_ids, note)


# ---------------------------------------------------------------------------
# People (`rr approvals`, `rr approve`, `rr deny`)


def listing(engine: Engine, *, now: datetime | None = None) -> list[dict]:
    """Pending requests that have not expired, oldest first."""
    now = now or _now()
    with engine.connect() as conn:
        rows = conn.execute(select(TABLE).where(TABLE.c.state == PENDING, TABLE.c.expires_at > now).order_by(TABLE.c.created_at)).all()
    return [_as_json(r, now) for r in rows]


def one(engine: Engine, request_id: str, *, now: datetime | None = None) -> dict | None:
    """One held request, pending or not, with how it ended (`rr approvals show ID`)."""
    now = now or _now()
    with engine.connect() as conn:
        r = conn.execute(select(TABLE).where(TABLE.c.request_id == request_id)).first()
    if r is None:
        return None
    decided_at = _utc(r.decided_at)
    state = TIMED_OUT if r.state == PENDING and _utc(r.expires_at) <= now else r.state  # past its time: the data plane times it out
    return {**_as_json(r, now), "state": state, "decided_by": r.decided_by, "decided_at": decided_at.isoformat(timespec="seconds") if decided_at else None, "note": r.note}


def _as_json(r, now: datetime) -> dict:
    created, expires = _utc(r.created_at), _utc(r.expires_at)
    return {
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
