"""One audit record per request, with constant field names.

Records never hold secrets, bodies or query values. They are built on the
request path (a dict, no I/O) and handed to the writer (`audit.writer`).
"""

from __future__ import annotations

from datetime import datetime, timezone

FIELDS = (
    "ts",
    "request_id",
    "result",  # allow | deny | would-deny | would-hold | error
    "status",
    "code",
    "reason",
    "scope",
    "rule",
    "proxy",
    "credential",
    "channel",
    "target",
    "target_credential",
    "method",
    "scheme",
    "host",
    "port",
    "path",  # without the query string
    "client",
    "bytes_in",
    "bytes_out",
    "latency_ms",
    "decision_ms",  # of latency_ms: rr's own decision (auth, target, rules, meters)
    "config_version",
    "subject",  # of a verified token (jwt_verify, oauth2); never the token
    "issuer",
    "verification",  # which verification path accepted or refused the token
    "meters",  # names of the meters that counted this request
    "degraded",  # why the decision was taken without a backend (on_backend_error: allow), else null
    "redactions",  # detector -> count, never the values
    "unmeasured",  # response_value meter -> why it could not measure this response (no-value, not-json, too-large, stream-broken)
    "charged",  # response_value/cost meter -> what this request counted once settled (a count, or "0.0024 USD")
    "dataplane",  # the data plane that served the request
    "token",  # id of the minted token the caller presented (`credential` is its parent), else null
    "mcp_method",  # the JSON-RPC method(s) of a body the rules read (a batch's joined by ','), else null
    "mcp_tool",  # the MCP tool(s) called (`params.name`), else null
    "approval",  # a held request: {rule, state, by, at, note} (docs/approvals.md), else null
)


_FIELD_SET = frozenset(FIELDS)
_EMPTY = dict.fromkeys(FIELDS)


def new_record(**values) -> dict:
    if not _FIELD_SET.issuperset(values):
        raise KeyError(f"unknown audit fields: {sorted(set(values) - _FIELD_SET)}")
    rec = _EMPTY.copy()
    rec["ts"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    rec.update(values)
    return rec
