"""The control plane's admin endpoints (`/v1/admin/…`), behind an admin token:
what `rr status`, `rr audit`, `rr usage`, `rr export`, `rr apply` and
`rr approvals` / `approve` / `deny` do when given `--server URL`. Each handler takes the request (admin, query, body) and
returns JSON; the client (rr_addon/cli/remote.py) renders it."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

from sqlalchemy import select

from rr_addon.policy import schema
from rr_addon.config.diff import ABSENT
from rr_addon.config.load import ConfigError, ConfigErrors, Source
from rr_addon.store import approvals as approvals_store
from rr_addon.store import audit_store, config_store, dataplanes

logger = logging.getLogger("rr.controlplane")


def status(cp: Any, req: dict, _: dict) -> dict:
    return {
        "config_version": config_store.current_version(cp.engine),
        "database": "control plane",
        "dataplanes": [p.as_json() for p in dataplanes.list_planes(cp.engine)],
    }


def audit(cp: Any, req: dict, _: dict) -> dict:
    q = req["query"]
    since = audit_store.parse_since(q["since"]) if q.get("since") else None
    flt = audit_store.Filter(proxy=q.get("proxy") or None, code=q.get("code") or None, since=since)
    limit = min(int(q.get("limit", 50)), 1000)
    if limit < 0:  # a negative LIMIT is no limit at all to SQLite
        raise ValueError(f"limit must be 0 or more, not {limit}")
    if "after" in q:  # --follow: the records stored after this id, oldest first
        t = audit_store.TABLE
        stmt = select(t).where(t.c.id > int(q["after"]), *flt.clauses()).order_by(t.c.id).limit(limit)
        with cp.engine.connect() as conn:
            records = [audit_store.record_from_row(r) for r in conn.execute(stmt).all()]
        return {"records": records, "last_id": records[-1]["id"] if records else int(q["after"])}
    upto = audit_store.last_id(cp.engine)
    records = [r for r in audit_store.query(cp.engine, flt, limit=limit) if r["id"] <= upto] if limit else []
    return {"records": records, "last_id": upto}


def usage(cp: Any, req: dict, _: dict) -> dict:
    from rr_addon.reports import counter_backend, read_counters, row_key, report, row_json

    q = req["query"]
    snap = config_store.load_snapshot(cp.engine, cp.keyring)
    now = time.time()
    counts = asyncio.run(read_counters(counter_backend(cp.engine)))
    rows, scopes = report(cp.engine, snap, counts, now, q.get("proxy") or None, q.get("credential") or None)
    return {"rows": [{**row_json(r, now), "by_scope": scopes.get(row_key(r), {})} for r in rows]}


def usage_reset(cp: Any, req: dict, _: dict) -> dict:
    """`rr usage reset --server`: as on the control plane (its counters, and every hybrid data plane's)."""
    from rr_addon.hybrid import resets
    from rr_addon.reports import counter_backend

    b = req["body"] or {}
    snap = config_store.load_snapshot(cp.engine, cp.keyring)
    try:
        keys = resets.prefixes(snap, str(b.get("proxy") or ""), b.get("credential") or None, b.get("meter") or None)
    except ValueError as e:
        return {"error": str(e)}
    if b.get("dry_run"):
        return {"prefixes": keys}
    total, rid = asyncio.run(resets.reset_here(counter_backend(cp.engine), cp.engine, keys))
    logger.info("rr control plane: admin %s reset usage counters %s (reset %d)", req["admin"], ", ".join(keys), rid)
    return {"prefixes": keys, "reset": total, "note": resets.hybrid_note(cp.engine)}


def export(cp: Any, req: dict, _: dict) -> dict:
    from rr_addon.reports import export_text

    return {"yaml": export_text(config_store.read(cp.engine, cp.keyring))}


def _source(doc: dict) -> Source:
    source = Source()
    for section, name, file in doc.get("files", []):
        source.files[(section, name)] = str(file)
    for section, name, rest, line in doc.get("lines", []):
        source.lines.setdefault((section, name), {})[tuple(rest)] = int(line)
    return source


def _json_value(v: Any) -> Any:
    return None if v is ABSENT else v


def apply(cp: Any, req: dict, _: dict) -> dict:
    """`rr apply --server`: the operator's machine loaded and validated the files and
    resolved their secrets; here the stored state decides (digests, plan, write).
    Consent is the script rule: deletes need `prune`, an empty configuration `allow_empty`."""
    from rr_addon.apply import apply as do_apply
    from rr_addon.apply import prepare_loaded

    body = req["body"] or {}
    source = _source(body.get("source") or {})
    paths = [str(p) for p in body.get("paths") or ["<remote>"]]
    labels = {(s, o, c): label for s, o, c, label in body.get("labels") or []}
    dry_run, prune, allow_empty = bool(body.get("dry_run")), bool(body.get("prune")), bool(body.get("allow_empty"))
    out: dict = {"errors": [], "warnings": [], "broken": [], "changes": [], "refused": None, "version": None}
    try:
        config = schema.Config.model_validate(body.get("config") or {})
        prepared = prepare_loaded(config, source, paths, cp.engine, cp.keyring, env={}, labels=labels)
    except ConfigErrors as e:
        out["errors"] = [dataclasses.asdict(x) for x in e.errors]
        return out
    except ValueError as e:
        out["errors"] = [dataclasses.asdict(ConfigError(",".join(paths), "", str(e)))]
        return out
    out["broken"] = list(prepared.stored.broken.values())
    out["warnings"] = [dataclasses.asdict(w) for w in prepared.warnings]
    out["changes"] = [
        {"action": c.action, "kind": c.kind, "name": c.name, "detail": c.detail,
         "fields": [{"path": f.path, "old": _json_value(f.old), "new": _json_value(f.new), "note": f.note, "old_absent": f.old is ABSENT, "new_absent": f.new is ABSENT} for f in c.fields]}
        for c in prepared.changes
    ]
    out["stored_version"] = prepared.stored.version
    if not dry_run:
        if prepared.empty and not allow_empty:
            out["refused"] = f"{', '.join(paths)} declare no target and no proxy; nothing was written. Pass --allow-empty if the configuration really is meant to be empty"
            return out
        if prepared.deletes and not prune:
            deletes = ", ".join(f"{c.kind} {c.name}" for c in prepared.deletes)
            out["refused"] = f"this apply would delete {len(prepared.deletes)} object(s) the files do not declare: {deletes}. Nothing was written. Pass --prune to delete them, or add them to the files to keep them"
            return out
    try:
        if dry_run or prepared.changed:
            out["version"] = do_apply(prepared, cp.engine, cp.keyring, f"{req['admin']}@control-plane:" + ",".join(paths), dry_run=dry_run)
    except ConfigErrors as e:
        out["errors"] = [dataclasses.asdict(x) for x in e.errors]
    except config_store.ConcurrentChange as e:
        out["refused"] = str(e)
    if out["version"] is not None and not dry_run:
        logger.info("rr control plane: admin %s applied configuration version %d", req["admin"], out["version"])
    return out


def approvals(cp: Any, req: dict, _: dict) -> dict:
    """`rr approvals --server`: every data plane's pending holds; `show ID`: one, pending or not."""
    if "request_id" in req["query"]:
        return {"approval": approvals_store.one(cp.engine, req["query"]["request_id"])}
    return {"approvals": approvals_store.listing(cp.engine)}


MAX_BY, MAX_NOTE = 100, 500


def decide(cp: Any, req: dict, _: dict) -> dict:
    """`rr approve|deny ID --server`: the decision is recorded as the admin's
    (`--by NAME` is kept next to it: `NAME (admin ops)`), so the token, not the
    caller's word, says who decided."""
    body = req["body"] if isinstance(req["body"], dict) else {}
    request_id, state, by, note = body.get("request_id"), body.get("state"), body.get("by"), body.get("note")
    if not isinstance(request_id, str) or not request_id or len(request_id) > 100:
        raise ValueError("request_id: expected the id `rr approvals` shows")
    if state not in (approvals_store.APPROVED, approvals_store.DENIED):
        raise ValueError("state: expected approved or denied")
    if by is not None and (not isinstance(by, str) or not by.strip() or len(by) > MAX_BY):
        raise ValueError(f"by: a name of 1 to {MAX_BY} characters")
    if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE):
        raise ValueError(f"note: at most {MAX_NOTE} characters")
    who = req["admin"] if by in (None, req["admin"]) else f"{by} (admin {req['admin']})"
    applied, closed = approvals_store.decide(cp.engine, request_id, state, who, note)
    if applied:
        logger.info("rr control plane: admin %s %s held request %s", req["admin"], state, request_id)
    closed_json = None if closed is None else {"state": closed.state, "by": closed.by, "at": closed.at.isoformat() if closed.at else None, "note": closed.note}
    return {"applied": applied, "closed": closed_json}


def install(cp: Any) -> None:
    cp.admin_handlers.update(
        {
            ("GET", "/v1/admin/status"): status,
            ("GET", "/v1/admin/audit"): audit,
            ("GET", "/v1/admin/usage"): usage,
            ("GET", "/v1/admin/export"): export,
            ("POST", "/v1/admin/apply"): apply,
            ("GET", "/v1/admin/approvals"): approvals,
            ("POST", "/v1/admin/approvals/decide"): decide,
            ("POST", "/v1/admin/usage-reset"): usage_reset,
        }
    )
