"""The pending-approval rows (rr_addon.store.approvals) on SQLite and PostgreSQL: the
first decision wins, a late one is told what happened, expired rows are neither
listed nor decidable."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import update

from rr_addon.store import approvals


def row(request_id: str, **over) -> dict:
    base = {
        "request_id": request_id, "dataplane": "dp-1", "proxy": "agent", "credential": "bot", "target": "api",
        "target_credential": "live", "method": "POST", "url": "https://api.example.com/v1/refunds", "scope": "target",
        "rule": "refunds-need-a-human", "body_preview": '{"amount":1}',
    }
    return {**base, **over}


def test_listed_then_approved_once(engine):
    approvals.record(engine, row("r1"), 60)
    approvals.record(engine, row("r2", proxy="other"), 60)
    listed = approvals.listing(engine)
    assert [r["request_id"] for r in listed] == ["r1", "r2"]
    assert listed[0]["rule"] == "refunds-need-a-human" and listed[0]["expires_in_seconds"] in (59, 60)
    assert approvals.decisions(engine, ["r1", "r2"]) == {}
    applied, closed = approvals.decide(engine, "r1", approvals.APPROVED, "alice", "ticket 7")
    assert applied and closed.state == "approved" and closed.by == "alice"
    assert approvals.decisions(engine, ["r1", "r2"])["r1"].note == "ticket 7"
    # the first decision wins: a later deny, or the data plane timing it out, gets the approval back
    applied, closed = approvals.decide(engine, "r1", approvals.DENIED, "mallory", None)
    assert not applied and (closed.state, closed.by) == ("approved", "alice")
    assert approvals.close(engine, "r1", approvals.TIMED_OUT).state == "approved"
    assert [r["request_id"] for r in approvals.listing(engine)] == ["r2"]


def test_the_data_plane_closing_first_wins(engine):
    approvals.record(engine, row("r3"), 60)
    assert approvals.close(engine, "r3", approvals.WITHDRAWN, None, "the client closed the connection").state == "withdrawn"
    applied, closed = approvals.decide(engine, "r3", approvals.APPROVED, "alice", None)
    assert not applied and closed.state == "withdrawn"


def test_expired_rows_are_neither_listed_nor_decided(engine):
    approvals.record(engine, row("r4"), 60)
    with engine.begin() as conn:
        conn.execute(update(approvals.TABLE).values(expires_at=datetime.now(timezone.utc) - timedelta(seconds=1)))
    assert approvals.listing(engine) == []
    applied, closed = approvals.decide(engine, "r4", approvals.APPROVED, "alice", None)
    assert not applied and closed.state == "timed-out"


def test_unknown_and_abandoned(engine):
    assert approvals.decide(engine, "nope", approvals.APPROVED, "alice", None) == (False, None)
    approvals.record(engine, row("r5"), 60)
    approvals.abandon(engine, ["r5"], "rr stopped")
    assert approvals.listing(engine) == []
    assert approvals.decisions(engine, ["r5"])["r5"].state == "abandoned"


def test_a_data_plane_reads_and_closes_only_its_own_rows(engine):
    """A hybrid control plane's rows: `owner` is the data plane named by the certificate.
    A name with LIKE wildcards matches itself only."""
    approvals.record(engine, row("a1", dataplane="eu/h-1"), 60)
    approvals.record(engine, row("b1", dataplane="e_/h-2"), 60)
    approvals.record(engine, row("c1", dataplane="eu-2/h-3"), 60)
    approvals.decide(engine, "a1", approvals.APPROVED, "alice", None)
    approvals.decide(engine, "b1", approvals.DENIED, "bob", None)
    assert set(approvals.decisions(engine, ["a1", "b1"], owner="eu")) == {"a1"}
    assert set(approvals.decisions(engine, ["a1", "b1"], owner="e_")) == {"b1"}
    assert approvals.decisions(engine, ["a1", "b1"], owner="e%") == {}
    # closing another data plane's row changes nothing and tells nothing of it
    closed = approvals.close(engine, "c1", approvals.APPROVED, "mitmweb", None, owner="eu")
    assert closed.state == approvals.ABANDONED and closed.by is None
    approvals.abandon(engine, ["c1"], "rr stopped", owner="eu")
    assert approvals.one(engine, "c1")["state"] == approvals.PENDING
    assert approvals.close(engine, "c1", approvals.WITHDRAWN, None, None, owner="eu-2").state == approvals.WITHDRAWN


def test_one_shows_a_decided_row(engine):
    approvals.record(engine, row("s1"), 60)
    assert approvals.one(engine, "s1")["state"] == approvals.PENDING
    approvals.decide(engine, "s1", approvals.DENIED, "bob", "no")
    shown = approvals.one(engine, "s1")
    assert (shown["state"], shown["decided_by"], shown["note"], shown["rule"]) == ("denied", "bob", "no", "refunds-need-a-human")
    assert shown["decided_at"] and approvals.one(engine, "nope") is None
