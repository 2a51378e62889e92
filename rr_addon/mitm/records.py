"""What a flow shows and leaves behind: rr's answers, the decision record in
`flow.metadata["rr"]` (what mitmweb and `rr.explain` show), and its one audit record."""

from __future__ import annotations

import logging
import time
from typing import Any

from mitmproxy import http

from rr_addon import metrics
from rr_addon.audit.records import new_record
from rr_addon.core import reasons
from rr_addon.core.event_redaction import EventRedactor
from rr_addon.core.recode import Recoder
from rr_addon.policy.scrub import StreamScrubber
from rr_addon.core.snapshot import Snapshot
from rr_addon.core.types import Decision, Outcome
from rr_addon.mitm import flows, flowstate, webview, wire
from rr_addon.mitm.exchange import ByteCounter

logger = logging.getLogger("rr")


def answer(flow: http.HTTPFlow, decision: Decision, extra_headers: tuple = ()) -> None:
    """rr answers the request itself; nothing is sent upstream."""
    wire.detach(flow.request)
    flow.response = flows.decision_response(decision, flow.id, extra_headers)


def replace_response(flow: http.HTTPFlow, decision: Decision) -> None:
    """The caller gets rr's error instead of the upstream response (which is kept out)."""
    flow.response = flows.decision_response(decision, flow.id)
    meta = flow.metadata["rr"]
    meta.update(result="deny", status=decision.status, code=decision.code, reason=decision.reason, scope=decision.scope, rule=decision.rule)
    webview.show(flow)


def blank_meta(snap: Snapshot | None) -> dict:
    meta = dict.fromkeys(("proxy", "credential", "channel", "target", "target_credential", "scope", "rule", "config_version"))
    meta.update(result="deny", status=None, code=None, reason="", config_version=snap.version if snap else None)
    return meta


def record(flow: http.HTTPFlow, outcome: Outcome, snap: Snapshot) -> None:
    """The decision, as viewers and the audit record see it."""
    d = outcome.decision
    result = d.result if d.allowed or not outcome.report_only else "would-hold" if d.held else "would-deny"
    ident, route = outcome.identity, outcome.route
    state = flowstate.peek(flow)
    flow.metadata["rr"] = {
        "result": result,
        "status": d.status,
        "code": d.code,
        "reason": d.reason,
        "scope": d.scope,
        "rule": d.rule,
        "proxy": ident.proxy if ident else None,
        "credential": ident.credential if ident else None,
        "channel": ident.channel if ident else None,
        "token": ident.token if ident else None,
        "target": route.target if route else None,
        "target_credential": route.target_credential if route else None,
        "config_version": snap.version,
        **((state.verification if state is not None else None) or {}),
        **((state.mcp if state is not None else None) or {}),
        **({"approval": state.approval} if state is not None and state.approval is not None else {}),
    }
    webview.show(flow)


def count_redactions(flow: http.HTTPFlow, counts: dict[str, int]) -> None:
    total = flow.metadata["rr"].setdefault("redactions", {})
    for k, v in counts.items():
        total[k] = total.get(k, 0) + v


def fail(rr: Any, flow: http.HTTPFlow, *, final: bool) -> None:
    """Answer 500 and forward nothing; `final` when the flow's last hook failed (audit it now)."""
    wire.detach(flow.request)
    flow.response = flows.error_response("internal-error", reasons.INTERNAL_ERROR, flow.id)
    old = flow.metadata.get("rr")
    meta = blank_meta(None)
    if isinstance(old, dict):
        meta.update({k: old.get(k) for k in meta})
    meta.update(result="error", status=500, code="internal-error", reason=reasons.INTERNAL_ERROR)
    flow.metadata["rr"] = meta
    webview.show(flow)
    if final:
        try:
            rr.finish(flow)
        except Exception:
            logger.exception("rr could not write the audit record of request %s", flow.id)


def finish(rr: Any, flow: http.HTTPFlow) -> None:
    """Write the flow's one audit record (to `rr.audit`) and count it."""
    state = flowstate.of(flow)
    if state.watch is not None:
        state.watch.cancel()
    if state.audited or rr.audit is None:
        return
    meta = flow.metadata["rr"]
    started = state.started
    req, resp = flow.request, flow.response
    stream = getattr(resp, "stream", None) if resp is not None else None
    bytes_out = stream.count if isinstance(stream, StreamScrubber) else stream.sent if isinstance(stream, Recoder) else (len(resp.raw_content or b"") if resp is not None else 0)
    metered = state.metered
    if isinstance(stream, Recoder) and isinstance(stream.scrubber, EventRedactor) and stream.scrubber.counts:
        count_redactions(flow, stream.scrubber.counts)  # an event stream redacted as it passed
    rr.audit.submit(
        new_record(
            request_id=flow.id if not flow.is_replay else f"{flow.id}/replay-{flow.metadata.get('rr_replays', 1)}",
            result=meta["result"],
            status=resp.status_code if resp is not None else meta["status"],
            code=meta["code"],
            reason=meta["reason"],
            scope=meta["scope"],
            rule=meta["rule"],
            proxy=meta["proxy"],
            credential=meta["credential"],
            channel=meta["channel"],
            target=meta["target"],
            target_credential=meta["target_credential"],
            method=req.method,
            scheme=req.scheme,
            host=req.host,
            port=req.port,
            path=req.path.partition("?")[0],
            client=flow.client_conn.peername[0] if flow.client_conn.peername else None,
            bytes_in=req.stream.count if isinstance(req.stream, ByteCounter) else len(req.raw_content or b""),
            bytes_out=bytes_out,
            latency_ms=round((time.monotonic() - started) * 1000, 3) if started else None,
            config_version=meta["config_version"],
            dataplane=rr.plane_id,
            decision_ms=round((state.decision_seconds or 0.0) * 1000, 3),
            meters=[m.name for m in metered.plan.meters] if metered is not None else [],
            degraded=reasons.METER_UNCOUNTED if metered is not None and metered.verdict.degraded and metered.verdict.admitted else None,
            redactions=meta.get("redactions") or {},
            unmeasured=meta.get("unmeasured"),
            charged=meta.get("charged"),
            subject=meta.get("subject"),
            issuer=meta.get("issuer"),
            verification=meta.get("verification"),
            token=meta.get("token"),
            mcp_method=meta.get("mcp_method"),
            mcp_tool=meta.get("mcp_tool"),
            approval=meta.get("approval"),
        )
    )
    state.audited = True
    rr.requests += 1
    metrics.request_done(
        meta["proxy"],
        meta["target"],
        meta["code"],
        state.decision_seconds,
        result=meta["result"],
        total_seconds=(time.monotonic() - started) if started else None,
    )
