"""`rr audit`, `rr audit prune`, `rr audit import`, `rr status` against real databases,
and the pure renderers behind them."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
from datetime import datetime, timedelta, timezone

import pytest
import typer
from cryptography.fernet import Fernet
from rich.console import Console
from sqlalchemy import update
from typer.testing import CliRunner

from rr_addon.audit import records as audit
from rr_addon.cli import ops
from rr_addon.crypto import Keyring
from rr_addon.store import audit_store, config_store, dataplanes
from rr_addon.store.db import make_engine, migrate


@pytest.fixture
def app() -> typer.Typer:
    """The `rr` app (`rr audit …`, `rr status`)."""
    from rr_addon.cli import app

    return app


def setup_db(url: str, version: int = 0):
    engine = make_engine(url)
    migrate(engine)
    config_store.initialise(engine, Keyring([Fernet.generate_key()]))
    with engine.begin() as conn:
        conn.execute(update(config_store.ConfigState).values(version=version))
    return engine


@pytest.fixture
def db(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'rr.db'}"
    monkeypatch.setenv("RR_HOME", str(tmp_path))
    monkeypatch.setenv("RR_DATABASE_URL", url)
    monkeypatch.setenv("COLUMNS", "220")
    engine = setup_db(url, version=7)
    yield engine
    engine.dispose()


def rec(i: int, days_ago: float = 0.0, **kw) -> dict:
    values = dict(
        request_id=f"req-{i:03d}",
        result="allow",
        status=200,
        proxy="billing",
        credential="agent-1",
        target="stripe",
        method="GET",
        scheme="https",
        host="api.stripe.com",
        port=443,
        path=f"/v1/charges/{i}",
        latency_ms=12.5,
        bytes_out=300,
    )
    values.update(kw)
    r = audit.new_record(**values)
    r["ts"] = (datetime.now(timezone.utc) - timedelta(days=days_ago)).isoformat(timespec="milliseconds")
    return r


def store(engine, records) -> None:
    audit_store.insert_rows(engine, [audit_store.row_from_record(r) for r in records])


def run(app, *args):
    result = CliRunner().invoke(app, list(args))
    return result


MIXED = [
    rec(1, days_ago=1.0),
    rec(2, days_ago=0.5, result="deny", status=403, code="access-denied", scope="proxy", rule="no-deletes", method="DELETE"),
    rec(3, days_ago=0.1, proxy="agent", credential="ci", result="deny", status=429, code="quota-exceeded", scope="meter", rule="requests"),
    rec(4, days_ago=0.0, proxy=None, credential=None, target=None, result="deny", status=401, code="unauthenticated"),
]


def test_audit_shows_the_latest_records_as_a_table(app, db):
    store(db, MIXED)
    r = run(app, "audit")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    body = [line for line in lines if "req-" in line]
    assert [line.split("│")[-2].strip() for line in body] == ["req-001", "req-002", "req-003", "req-004"]  # oldest first
    assert "403 access-denied" in body[1] and "proxy/no-deletes" in body[1] and "DELETE api.stripe.com/v1/charges/2" in body[1]
    assert "billing/agent-1" in body[0] and "12.5" in body[0]
    assert "401 unauthenticated" in body[3]


@pytest.mark.parametrize(
    "args,expected",
    [
        ([], ["req-001", "req-002", "req-003", "req-004"]),
        (["--limit", "2"], ["req-003", "req-004"]),
        (["--proxy", "billing"], ["req-001", "req-002"]),
        (["--code", "quota-exceeded"], ["req-003"]),
        (["--code", "401"], ["req-004"]),
        (["--code", "deny"], ["req-002", "req-003", "req-004"]),
        (["--since", "6h"], ["req-003", "req-004"]),
        (["--proxy", "billing", "--since", "18h"], ["req-002"]),
    ],
)
def test_audit_json_lines_and_filters(app, db, args, expected):
    store(db, MIXED)
    r = run(app, "audit", "--json", *args)
    assert r.exit_code == 0, r.output
    records = [json.loads(line) for line in r.output.splitlines()]
    assert [x["request_id"] for x in records] == expected
    assert all(set(audit.FIELDS) <= set(x) and isinstance(x["id"], int) for x in records)


def test_audit_says_when_nothing_matches(app, db):
    r = run(app, "audit", "--proxy", "nobody")
    assert r.exit_code == 0 and "no audit records match" in r.output


def test_audit_refuses_a_bad_since(app, db):
    r = run(app, "audit", "--since", "last tuesday")
    assert r.exit_code == 1 and "--since: 'last tuesday' is neither a duration" in r.output


def test_audit_on_an_uninitialised_database_says_what_to_do(app, tmp_path, monkeypatch):
    monkeypatch.setenv("RR_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    r = run(app, "audit")
    assert r.exit_code == 1 and "is not initialised: run `rr init`" in r.output


def test_audit_prune(app, db):
    store(db, [rec(1, days_ago=120), rec(2, days_ago=95), rec(3, days_ago=10)])
    r = run(app, "audit", "prune")
    assert r.exit_code == 0 and "pruned 2 audit records older than 90d" in r.output
    r = run(app, "audit", "prune", "--older-than", "1w")
    assert r.exit_code == 0 and "pruned 1 audit record older than 1w" in r.output
    assert audit_store.count(db) == 0
    r = run(app, "audit", "prune", "--older-than", "ninety days")
    assert r.exit_code == 1 and "--older-than: 'ninety days' is not a duration" in r.output


def test_audit_import_is_idempotent(app, db, tmp_path):
    spill = tmp_path / "audit.jsonl"
    spill.write_text("".join(json.dumps(r) + "\n" for r in MIXED))
    r = run(app, "audit", "import", str(spill))
    assert r.exit_code == 0 and "4 records read, 4 stored, 0 already there" in r.output
    r = run(app, "audit", "import", str(spill))
    assert r.exit_code == 0 and "4 records read, 0 stored, 4 already there" in r.output
    other = tmp_path / "audit-2.jsonl"
    other.write_text(json.dumps(rec(5)) + "\n")
    r = run(app, "audit", "import", str(spill), str(other))
    assert r.exit_code == 0 and "4 records read, 0 stored, 4 already there" in r.output and "1 records read, 1 stored" in r.output
    spill.write_text("not json\n")
    r = run(app, "audit", "import", str(spill))
    assert r.exit_code == 1 and "not an audit JSON-lines file" in r.output


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_audit_follow_tails_new_records(db, tmp_path, stop):
    store(db, [rec(0, result="deny", status=403, code="access-denied"), rec(1, result="deny", status=401, code="unauthenticated")])
    script = textwrap.dedent(
        """
        from rr_addon.cli import app
        app()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, "audit", "--follow", "--json", "--limit", "1", "--interval", "0.05", "--code", "deny"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ},
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)
    reader.start()
    try:
        # the latest matching record first: from then on it follows
        assert json.loads(lines.get(timeout=30))["request_id"] == "req-001"
        store(db, [rec(2), rec(3, result="deny", status=403, code="access-denied")])
        assert json.loads(lines.get(timeout=10))["request_id"] == "req-003"
        store(db, [rec(4, result="deny", status=401, code="unauthenticated")])
        assert json.loads(lines.get(timeout=10))["request_id"] == "req-004"
    finally:
        proc.send_signal(stop)
        proc.wait(10)
        reader.join(10)
        err = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and lines.empty()


def test_status_lists_data_planes_with_version_and_heartbeat(app, db):
    dataplanes.register(db, "dp-current", listen="127.0.0.1:8081", config_version=7)
    dataplanes.beat(db, "dp-current", config_version=7, stats={"requests": 42, "audit_dropped": 0})
    dataplanes.register(db, "dp-behind", listen="127.0.0.1:8082", config_version=6)
    dataplanes.register(db, "dp-gone", listen="127.0.0.1:8083", config_version=5)
    with db.begin() as conn:
        conn.execute(
            update(dataplanes.TABLE).where(dataplanes.TABLE.c.id == "dp-gone").values(heartbeat_at=datetime.now(timezone.utc) - timedelta(minutes=5))
        )
    r = run(app, "status")
    assert r.exit_code == 0, r.output
    rows = {line.split("│")[1].strip(): line for line in r.output.splitlines() if "│ dp-" in line}
    assert set(rows) == {"dp-current", "dp-behind", "dp-gone"}
    assert "configuration version 7" in r.output
    assert "127.0.0.1:8081" in rows["dp-current"] and " 7 " in rows["dp-current"] and "42" in rows["dp-current"]
    assert "6 (behind)" in rows["dp-behind"]
    assert "stale: 5m 0" in rows["dp-gone"]
    assert "2 running, 1 stale (no heartbeat; crashed or cut off), 1 not yet on version 7" in r.output

    r = run(app, "status", "--json")
    data = json.loads(r.output)
    assert data["config_version"] == 7 and data["database"].startswith("sqlite:///")
    planes = {p["id"]: p for p in data["dataplanes"]}
    assert planes["dp-gone"]["stale"] is True and planes["dp-current"]["stats"] == {"requests": 42, "audit_dropped": 0}


def test_status_with_no_data_plane(app, db):
    r = run(app, "status")
    assert r.exit_code == 0 and "no data plane has registered" in r.output


def test_status_and_audit_on_postgresql(app, pg_url, monkeypatch, tmp_path):
    monkeypatch.setenv("RR_HOME", str(tmp_path))
    monkeypatch.setenv("RR_DATABASE_URL", pg_url)
    monkeypatch.setenv("COLUMNS", "220")
    engine = setup_db(pg_url, version=3)
    try:
        dataplanes.register(engine, "dp-pg", listen="127.0.0.1:8081", config_version=3)
        store(engine, MIXED)
        r = run(app, "status", "--json")
        assert r.exit_code == 0, r.output
        data = json.loads(r.output)
        assert data["config_version"] == 3 and [p["id"] for p in data["dataplanes"]] == ["dp-pg"]
        assert "postgres" in data["database"] and "***" not in data["database"]  # trust auth: no password to hide
        r = run(app, "audit", "--json", "--code", "deny", "--limit", "2")
        assert [json.loads(x)["request_id"] for x in r.output.splitlines()] == ["req-003", "req-004"]
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------
# pure renderers


@pytest.mark.parametrize("seconds,text", [(0, "0.0s"), (4.25, "4.2s"), (59.9, "59.9s"), (61, "1m 01s"), (3600, "1h 00m"), (7320, "2h 02m"), (90000, "1d 01h")])
def test_human_age(seconds, text):
    assert ops.human_age(seconds) == text


def plain(renderable) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_audit_line_says_who_what_and_why():
    line = plain(ops.audit_line(MIXED[1]))
    assert line.startswith(MIXED[1]["ts"][:23].replace("T", " "))
    assert "403 access-denied  billing/agent-1 -> stripe  DELETE api.stripe.com/v1/charges/2  12.5ms  [proxy/no-deletes]  req-002" in line


def test_a_non_default_port_is_shown():
    assert "GET api.example.com:8443/x" in plain(ops.audit_line(rec(9, host="api.example.com", port=8443, path="/x")))
    assert "GET api.example.com/x" in plain(ops.audit_line(rec(9, host="api.example.com", scheme="http", port=80, path="/x")))


def test_an_mcp_call_is_named_with_its_method_and_tool_escaped():
    line = plain(ops.audit_line(rec(9, host="mcp.example.com", method="POST", path="/mcp", mcp_method="tools/call", mcp_tool="delete_\x1b[2Jfile")))
    assert "POST mcp.example.com/mcp [tools/call delete_\\x1b[2Jfile]" in line and "\x1b" not in line


def test_status_table_marks_stale_and_behind():
    now = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)

    def plane(i, version, age, stale):
        return dataplanes.DataPlane(
            id=f"h-{i}", hostname="h", pid=i, listen=f"127.0.0.1:{8080 + i}", started_at=now - timedelta(hours=1),
            heartbeat_at=now - timedelta(seconds=age), config_version=version, rr_version="0.1.0", stats={}, age=age, stale=stale,
        )  # fmt: skip

    out = plain(ops.status_table([plane(1, 9, 1.0, False), plane(2, 8, 2.0, False), plane(3, None, 100, True)], 9, now))
    assert "configuration version 9" in out
    assert "8 (behind)" in out and "stale: 1m 40s ago" in out and "1h 00m" in out
    summary = plain(ops.status_summary([plane(1, 9, 1.0, False), plane(2, 8, 2.0, False)], 9))
    assert summary.strip() == "2 running, 1 not yet on version 9"
