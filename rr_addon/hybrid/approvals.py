"""Approvals on a hybrid data plane (docs/hybrid.md, docs/approvals.md): the data
plane has no database, so it keeps its holds in the control plane's
`rr_approval` table over its mutual-TLS link, where `rr approvals` / `rr approve`
/ `rr deny` (locally or `--server`) see and decide them.

    data plane                           control plane (certificate checked on every call)
    POST /v1/approvals            ->     insert a pending row, `dataplane` = NAME/<instance>
    POST /v1/approvals/decisions  ->     which of these ids are decided (every 0.5 s while holding)
    POST /v1/approvals/close      ->     how the hold ended here (time-out, client gone, mitmweb)
    POST /v1/approvals/abandon    ->     rr stopping

NAME comes from the client certificate, never from the body, and every read or
close is limited to that data plane's own rows: one data plane can neither see
nor decide another's holds. What is sent was masked on the data plane
(rr_addon.mitm.approvals): the control plane never sees a caller key or a
target secret. A decision reaches the data plane only as the answer of the
control plane it verified with the bundle's CA.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

import httpx
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from rr_addon.store import approvals as store

TIMEOUT = 5.0  # seconds for one call: a hold the control plane cannot record in time is refused (503)
MAX_TIMEOUT = 3600  # the policy's bound for approval.timeout
MITMWEB = "mitmweb"  # the only decider a data plane may name (mitmweb's resume/kill on the data plane)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")
_FIELDS = {  # what a data plane sends of a hold, and the longest each may be
    "proxy": 255, "credential": 255, "target": 255, "target_credential": 255, "method": 32,
    "url": 65536, "scope": 64, "rule": 255, "body_preview": 8192,
}
_OPTIONAL = ("target", "target_credential")
_ENDINGS = {  # the states a data plane may end its own hold in, and who may be named
    store.APPROVED: {MITMWEB}, store.DENIED: {MITMWEB}, store.TIMED_OUT: {None},
    store.WITHDRAWN: {None}, store.ABANDONED: {None},
}


class HoldRefused(Exception):
    """The control plane answered, but did not take the hold (the message says why)."""


def _closed_json(c: store.Closed) -> dict:
    return {"state": c.state, "by": c.by, "at": c.at.isoformat() if c.at else None, "note": c.note}


def _closed(d: dict) -> store.Closed:
    at = datetime.fromisoformat(d["at"]) if d.get("at") else None
    return store.Closed(str(d["state"]), d.get("by"), at, d.get("note"))


# ---------------------------------------------------------------------------
# The data plane: the ledger rr_addon.mitm.approvals writes to (blocking; run in a thread)


class RemoteLedger:
    where = "the control plane"
    unavailable = "the control plane did not record it (unreachable, or it refused)"

    def __init__(self, link: Any):
        self.link = link
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def _post(self, path: str, body: dict) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self.link._client(TIMEOUT)
            client = self._client
        return self.link._call(client, "POST", path, json=body).json()

    def record(self, row: dict, timeout: float) -> None:
        try:
            self._post("/v1/approvals", {"hold": row, "timeout": int(timeout), "instance": self.link.plane_id})
        except httpx.HTTPStatusError as e:
            raise HoldRefused(str(e)) from None

    def decisions(self, request_ids: Iterable[str]) -> dict[str, store.Closed]:
        found = self._post("/v1/approvals/decisions", {"ids": list(request_ids)})["decided"]
        return {str(k): _closed(v) for k, v in found.items()}

    def close(self, request_id: str, state: str, by: str | None, note: str | None) -> store.Closed:
        return _closed(self._post("/v1/approvals/close", {"request_id": request_id, "state": state, "by": by, "note": note}))

    def abandon(self, request_ids: Iterable[str], note: str) -> None:
        self._post("/v1/approvals/abandon", {"ids": list(request_ids), "note": note})

    def dispose(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


# ---------------------------------------------------------------------------
# The control plane: one function per endpoint; `owner` is the certificate's data plane


class BadHold(ValueError):
    pass


def _text(body: dict, key: str, limit: int, *, optional: bool = False) -> str | None:
    value = body.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise BadHold(f"{key}: expected a string of at most {limit} characters")
    return value


def _request_id(value: Any) -> str:
    if not isinstance(value, str) or not _REQUEST_ID.fullmatch(value):
        raise BadHold("request_id: expected 1 to 100 letters, digits, '.', '_', ':' or '-'")
    return value


def _ids(body: dict) -> list[str]:
    ids = body.get("ids")
    if not isinstance(ids, list) or len(ids) > 10_000:
        raise BadHold("ids: expected a list of request ids")
    return [_request_id(i) for i in ids]


def create(engine: Engine, owner: str, instance: str, body: dict) -> dict:
    hold = body.get("hold")
    if not isinstance(hold, dict):
        raise BadHold('expected {"hold": {...}, "timeout": SECONDS}')
    timeout = body.get("timeout")
    if not isinstance(timeout, int) or isinstance(timeout, bool) or not 1 <= timeout <= MAX_TIMEOUT:
        raise BadHold(f"timeout: expected whole seconds from 1 to {MAX_TIMEOUT}")
    row = {k: _text(hold, k, n, optional=k in _OPTIONAL) for k, n in _FIELDS.items()}
    row["request_id"] = _request_id(hold.get("request_id"))
    row["dataplane"] = f"{owner}/{instance}"  # from the certificate, whatever the body says
    try:
        store.record(engine, row, timeout)
    except IntegrityError:
        raise HoldRefused(f"request {row['request_id']} is already recorded") from None
    expires = datetime.now(timezone.utc) + timedelta(seconds=timeout)
    return {"request_id": row["request_id"], "expires_at": expires.isoformat()}


def decisions(engine: Engine, owner: str, body: dict) -> dict:
    found = store.decisions(engine, _ids(body), owner=owner)
    return {"decided": {k: _closed_json(v) for k, v in found.items()}}


def close(engine: Engine, owner: str, body: dict) -> dict:
    request_id = _request_id(body.get("request_id"))
    state, by = body.get("state"), body.get("by")
    if state not in _ENDINGS:
        raise BadHold(f"state: expected one of {', '.join(_ENDINGS)}")
    if by not in _ENDINGS[state]:
        raise BadHold(f"by: a data plane names no decider but {MITMWEB!r} (people decide with rr approve / rr deny)")
    note = _text(body, "note", 500, optional=True)
    return _closed_json(store.close(engine, request_id, state, by, note, owner=owner))


def abandon(engine: Engine, owner: str, body: dict) -> dict:
    ids = _ids(body)
    store.abandon(engine, ids, _text(body, "note", 500) or "", owner=owner)
    return {"abandoned": len(ids)}
