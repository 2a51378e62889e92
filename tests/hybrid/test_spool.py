"""The data plane's spool keeps working across an upgrade that adds audit columns."""

from __future__ import annotations

import sqlite3

from rr_addon.audit import records as audit
from rr_addon.hybrid import spool
from rr_addon.store import audit_store


def test_a_spool_from_an_older_rr_gains_the_new_columns_and_keeps_its_records(tmp_path):
    directory = tmp_path / "dataplane"
    engine = spool.open_spool(directory)
    audit_store.insert_rows(engine, [audit_store.row_from_record(audit.new_record(request_id="waiting-1", result="allow"))])
    engine.dispose()
    with sqlite3.connect(directory / "spool.db") as db:  # as an older rr wrote it: without the newest column
        db.execute("ALTER TABLE rr_audit DROP COLUMN redactions")
    engine = spool.open_spool(directory)
    try:
        audit_store.insert_rows(engine, [audit_store.row_from_record(audit.new_record(request_id="new-1", result="deny", redactions={"email": 1}))])
        records = spool.oldest(engine, 10)
        assert [r["request_id"] for r in records] == ["waiting-1", "new-1"]
        assert records[1]["redactions"] == {"email": 1}
    finally:
        engine.dispose()
