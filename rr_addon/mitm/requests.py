"""The request side of a flow: facts from the flow, the gate's verdict, and the verdict
acted on — an answer, or the request stamped with what was decided (wire.Stamp).

`requestheaders` runs the gate's first half (authentication, token
verification, target, path); a request whose decision needs its body waits for
the `request` hook, which runs the second half (body, rules, meters, upstream
token). Every await is followed by a check that the flow was not edited
meanwhile (mitmweb): an edited request is refused.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from mitmproxy import ctx, http

from rr_addon.core import reasons
from rr_addon.policy.bodies import BodyError, DecodedTooLarge, decode_content, dump_json, is_json_content_type, parse_json
from rr_addon.core.decide import Admission, too_large
from rr_addon.core.responses import EMPTY
from rr_addon.core.snapshot import Snapshot
from rr_addon.core.types import Decision, Outcome
from rr_addon.gate import Admitted, Verdict
from rr_addon.mitm import exchange, flows, flowstate, records, webview, wire


async def requestheaders(rr: Any, flow: http.HTTPFlow) -> None:
    if flow.is_replay:
        # decided again from scratch, audited as "<flow id>/replay-<n>" (the database keeps one record per id)
        flowstate.forget(flow)
        wire.detach(flow.request)
        flow.metadata.pop("rr", None)
        flow.metadata["rr_replays"] = flow.metadata.get("rr_replays", 0) + 1
    if flow.response or flow.error or not flow.live:
        return
    state = flowstate.of(flow)
    state.started = time.monotonic()
    snap = rr.snapshot
    if snap is None:
        records.answer(flow, Decision.deny("internal-error", reasons.NO_CONFIGURATION))
        return
    seen = wire.Stamp(flow.request.data, None)
    # a replay (mitmweb) never borrows the credential of the tunnel its flow came through
    client = None if flow.is_replay else rr.guard.clients.get(flow.client_conn.id)
    facts = flows.request_facts(flow, client.tunnel_authorization if client is not None else ())
    peer = flow.client_conn.peername
    admitted = await rr.gate.admit(snap, facts, time.time(), client=peer[0] if peer else None)
    state.decision_seconds = (state.decision_seconds or 0.0) + admitted.seconds
    state.verification = admitted.verification
    if seen.differs(flow.request.data) is not None:  # edited (mitmweb) while a token was verified
        admitted = Verdict(changed(admitted.admission if isinstance(admitted, Admitted) else admitted.outcome), verification=admitted.verification)
    if isinstance(admitted, Verdict):
        outcome = admitted.outcome
        flows.strip_headers(flow.request, outcome.strip_headers)
        if outcome.missing_credential and ctx.options.rr_proxy_auth_challenge and rr.guard.proxied_plain_http(flow, client):
            # the plain-HTTP form of the CONNECT challenge: the client sends its proxy credential on the retry
            admitted = dataclasses.replace(admitted, outcome=dataclasses.replace(outcome, decision=dataclasses.replace(outcome.decision, status=407)))
        await conclude(rr, flow, admitted, snap)
        return
    admission = admitted.admission
    flows.strip_headers(flow.request, admission.strip_headers)
    if admission.path.target != flow.request.path:
        flow.request.path = admission.path.target  # the upstream receives exactly the path the rules checked
    flows.name_the_target(flow.request)
    state.seen = wire.Stamp(flow.request.data, None)  # rr's own changes are part of the decision
    if admitted.needs_body:
        length = flow.request.headers.get("content-length", "")
        refused = too_large(admission, int(length) if length.isdigit() else None, rr.gate.limits)
        if refused is not None:
            await conclude(rr, flow, Verdict(refused, admission), snap)
        else:
            # decided in `request`, once the body is in; whatever mitmproxy's
            # stream_large_bodies says, it is read whole (see wire.read_whole)
            wire.read_whole(flow, rr.gate.limits.inspect_bytes, admission.over_limit_reason)
            state.pending = admitted
        return
    verdict = await rr.gate.authorize(snap, admitted)
    state.decision_seconds = verdict.seconds
    if verdict.outcome.decision.held and not verdict.outcome.report_only:
        # held in `request`, once the whole body is in: the person approves what goes out
        wire.read_whole(flow, rr.gate.limits.inspect_bytes, reasons.HELD_OVER_INSPECTION_LIMIT)
        state.pending = admitted
        return
    await conclude(rr, flow, verdict, snap)
    if flow.response is None and exchange.streams_request(flow):
        flow.request.stream = exchange.ByteCounter()
        exchange.watch(flow)  # the body streams to the upstream: idleness counts from now


async def request(rr: Any, flow: http.HTTPFlow) -> None:
    state = flowstate.peek(flow)
    pending = state.pending if state is not None else None
    if pending is None or flow.response is not None:
        if flow.response is None and "rr" in flow.metadata:
            wire.seal_body(flow.request)  # decided without it; what arrived is what goes out
            exchange.watch(flow).sent()
        return
    state.pending = None
    snap = rr.snapshot
    if state.seen.differs(flow.request.data) is not None:  # edited (mitmweb) while the body arrived
        await conclude(rr, flow, Verdict(changed(pending.admission), pending.admission), snap)
        return
    state.seen.seal_body(flow.request.data)
    body = request_body(flow, rr.gate.limits.inspect_bytes, pending.admission.over_limit_reason)
    verdict = await rr.gate.authorize(snap, pending, body, hold=lambda outcome, admission, facts: rr.approvals.hold_flow(rr, flow, outcome, admission, facts, snap))
    state.decision_seconds = verdict.seconds
    await conclude(rr, flow, verdict, snap)
    if flow.response is None:
        exchange.watch(flow).sent()


def request_body(flow: http.HTTPFlow, limit: int, too_large: str = reasons.BODY_OVER_INSPECTION_LIMIT) -> bytes | Decision:
    """The request body, decoded under the inspection limit (a compressed bomb stops there)."""
    try:
        return decode_content(flow.request.raw_content or b"", flow.request.headers.get("content-encoding"), limit=limit)
    except DecodedTooLarge:
        return Decision.deny("payload-too-large", too_large, detail=f"over {limit} bytes decoded")
    except BodyError:
        return Decision.deny("invalid-request", reasons.BODY_ENCODING_INVALID)


async def conclude(rr: Any, flow: http.HTTPFlow, verdict: Verdict, snap: Snapshot) -> None:
    """Record the verdict on the flow; answer a refusal, or stamp the request with what was
    decided and the injection it may carry (see wire.Stamp)."""
    state = flowstate.of(flow)
    outcome, admission = verdict.outcome, verdict.admission
    if verdict.forwards and state.seen is not None and state.seen.differs(flow.request.data) is not None:
        outcome = changed(admission) if admission is not None else outcome  # edited while rr decided
        if verdict.metered is not None and rr.gate.metering is not None:
            await rr.gate.metering.add(verdict.metered.plan.refund())  # never sent: the quota is not used
            verdict = dataclasses.replace(verdict, metered=None)
    state.mcp = verdict.mcp
    records.record(flow, outcome, snap)
    state.metered = verdict.metered
    if not outcome.decision.allowed and not outcome.report_only:
        # no placeholder: nothing was injected into a request that is never sent (README: mitmweb);
        # the comment and the rr view name the target credential
        records.answer(flow, outcome.decision, verdict.extra_headers)
        return
    assert admission is not None
    if admission.pipeline is not EMPTY:
        state.pipeline = admission.pipeline
        if admission.pipeline.request_redactor is not None:
            redact_request(flow, admission.pipeline.request_redactor, rr.gate.limits.inspect_bytes)
            webview.show(flow)  # with the request's redaction count
    injection = verdict.injection
    if injection is not None and not injection.empty:
        flows.show_injection(flow.request, injection)
    else:
        injection = None
    wire.stamp(flow.request, injection)
    rr.guard.allow(flow, admission.target.allow_private_addresses)


def redact_request(flow: http.HTTPFlow, redactor, limit: int) -> None:
    """Scrub PII and secrets from the request body before it leaves (e.g. prompts to AI APIs)."""
    body = request_body(flow, limit)
    if not body or isinstance(body, Decision):
        return  # a body that does not decode was refused before this point
    if is_json_content_type(flow.request.headers.get("content-type")):
        try:
            doc, counts = redactor.redact_json(parse_json(body))
            new = dump_json(doc)
        except BodyError:
            text, counts = redactor.redact_text(body.decode("utf-8", "surrogateescape"))
            new = text.encode("utf-8", "surrogateescape")
    else:
        text, counts = redactor.redact_text(body.decode("utf-8", "surrogateescape"))
        new = text.encode("utf-8", "surrogateescape")
    if counts:
        flow.request.headers.pop("content-encoding", None)
        flow.request.content = new
        records.count_redactions(flow, counts)


def changed(admitted: Admission | Outcome) -> Outcome:
    """The refusal of a request that changed while rr was deciding on it."""
    decision = Decision.deny("access-denied", reasons.CHANGED_AFTER_DECISION)
    if isinstance(admitted, Admission):
        return dataclasses.replace(admitted.outcome(decision), report_only=False)
    return dataclasses.replace(admitted, decision=decision, report_only=False, missing_credential=False, unmatched=None)


