"""The response side of a flow: echo scrubbing, meters that read responses, filters and
redaction, and rr's answers when the upstream fails or is cut off.

`responseheaders` chooses how the body passes: streamed through a scrubber
(and a meter's tap), re-encoded as it streams, or held back whole (`wire.defer`)
for `response` to filter and redact. `error` answers a request whose upstream
failed before anything reached the caller, refunding its meters when nothing
went out.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from mitmproxy import ctx, http

from rr_addon.core import reasons
from rr_addon.policy.bodies import BodyError, DecodedTooLarge, decodable, decode_content, media_type
from rr_addon.core.quota import NOT_JSON, STREAM_BROKEN, TOO_LARGE, EventMeasure, Measurement
from rr_addon.core.event_redaction import event_stage
from rr_addon.core.message_redaction import redact_message
from rr_addon.core.recode import IDENTITY, Recoder, recodable
from rr_addon.core.responses import EMPTY, BodyCollector, BodyCopy, process_response
from rr_addon.policy.scrub import StreamScrubber, scrub_bytes
from rr_addon.core.types import Decision
from rr_addon.mitm import exchange, flows, flowstate, records, webview, wire

logger = logging.getLogger("rr")


def responseheaders(rr: Any, flow: http.HTTPFlow) -> None:
    if "rr" not in flow.metadata or flow.response is None:
        return
    resp = flow.response
    if flow.metadata["rr"]["result"] in ("allow", "would-deny", "would-hold"):
        state = flowstate.of(flow)
        exchange.watch(flow).answered()
        injection = wire.attached(flow.request)
        pairs = injection.scrub if injection is not None else ()
        if pairs:  # on the raw fields: the mask has the secret's length, order and names stay
            fields = resp.headers.fields
            # a header whose name spells the secret is dropped (a masked name would not be a valid token)
            clean = tuple((k, scrub_bytes(v, pairs)) for k, v in fields if scrub_bytes(k, pairs) == k)
            if clean != fields:
                resp.headers.fields = clean
        metered = state.metered
        if metered is not None and metered.verdict.policy:
            resp.headers["RateLimit-Policy"] = metered.verdict.policy
            resp.headers["RateLimit"] = metered.verdict.ratelimit or ""
        pipeline = state.pipeline or EMPTY
        encoding = resp.headers.get("content-encoding", "identity")
        encoded = encoding.strip().lower() not in ("", "identity")
        coding = recodable(encoding)
        valued = metered is not None and metered.plan.needs_response and flow.request.method != "HEAD"
        # an event stream is measured as it passes (encoded ones are read whole at the end)
        events = valued and not encoded and media_type(resp.headers.get("content-type")) == "text/event-stream"
        body = flow.request.method != "HEAD" and resp.status_code >= 200 and resp.status_code not in (204, 304)
        if pairs and encoded and body and not decodable(encoding):
            # a coding rr cannot undo could carry the echoed secret to a caller that can (fail closed)
            detail = f"content-encoding {encoding!r}"
            state.unscrubbable = Decision.deny("upstream-unavailable", reasons.RESPONSE_ENCODING_UNSCRUBBABLE, detail=detail)
            resp.stream = BodyCollector(0, over=True)  # the body is never kept
            wire.defer(flow)
            resp.headers["rr-request-id"] = flow.id
            return
        held_for = (
            reasons.RESPONSE_TOO_LARGE
            if pipeline.applies(resp.status_code, resp.headers.get("content-type"))
            else reasons.BODY_TOO_LARGE_ENCODING
            if pairs and encoded and coding is None
            else None
        )
        # a meter that reads the body gets a copy (up to rr_buffer_limit) as the response streams on
        copy = BodyCopy(ctx.options.rr_buffer_limit) if valued and not events and held_for is None else None
        limit = ctx.options.rr_buffer_limit
        stage = event_stage(pipeline, resp.status_code, resp.headers.get("content-type"), pairs, limit, flow.id) if body else None
        if stage is not None and (coding is not None or not encoded):
            # redacted (and filtered) event by event as it streams: rr_addon.core.event_redaction
            tap = metered.plan.events(resp.headers, limit) if valued else None
            resp.stream = Recoder(coding or IDENTITY, pairs, tap=tap, on_fail=lambda: exchange.abandon(flow), stage=stage)
            wire.guard(flow)
            resp.headers.pop("content-length", None)
            if not (flow.request.is_http2 or flow.request.is_http3):
                resp.headers["transfer-encoding"] = "chunked"
        elif flow.request.method != "HEAD" and held_for is not None:
            # buffered (capped), processed in `response`, sent whole: see wire.defer
            length = resp.headers.get("content-length", "")
            limit = ctx.options.rr_buffer_limit
            resp.stream = BodyCollector(limit, over=length.isdigit() and int(length) > limit and not encoded)
            state.held_for = held_for
            wire.defer(flow)
        elif events and flow.request.method != "HEAD":
            resp.stream = StreamScrubber(pairs, tap=metered.plan.events(resp.headers, ctx.options.rr_buffer_limit))
        elif pairs and encoded and body:
            # decoded, scrubbed and encoded again as it streams (rr_addon.core.recode): its length changes
            resp.stream = Recoder(coding, pairs, tap=copy, on_fail=lambda: exchange.abandon(flow))
            wire.guard(flow)  # headers wait for the first scrubbed bytes; a body that stops decoding is cut
            resp.headers.pop("content-length", None)
            if not (flow.request.is_http2 or flow.request.is_http3):
                resp.headers["transfer-encoding"] = "chunked"
        else:
            resp.stream = StreamScrubber(pairs, tap=copy)
    resp.headers["rr-request-id"] = flow.id

async def response(rr: Any, flow: http.HTTPFlow) -> None:
    if "rr" not in flow.metadata:
        return
    resp = flow.response
    if resp is not None and resp.trailers and (injection := wire.attached(flow.request)) is not None and injection.scrub:
        # HTTP/2 trailers arrive after the body and are sent after this hook (mitmweb shows them from here)
        clean = tuple((k, scrub_bytes(v, injection.scrub)) for k, v in resp.trailers.fields if scrub_bytes(k, injection.scrub) == k)
        if clean != resp.trailers.fields:
            resp.trailers.fields = clean
    if resp is not None and isinstance(resp.stream, BodyCollector):
        await process_buffered(rr, flow, resp, resp.stream)
    elif resp is not None and isinstance(getattr(resp.stream, "tap", None), EventMeasure):
        await settle(rr, flow, resp.stream.tap.result())
    elif resp is not None and isinstance(getattr(resp.stream, "tap", None), BodyCopy):
        await settle(rr, flow, measure_copy(flow, resp))
    if resp is not None and isinstance(resp.stream, Recoder) and resp.stream.failed:
        # cannot be scanned any further: nothing more is passed on, and the body must not
        # look complete — 502 if nothing reached the caller yet, else its stream is cut
        logger.warning("rr stopped passing on the response of request %s: %s", flow.id, resp.stream.failed)
        wire.cut(flow)
        if wire.deferred(flow):
            records.replace_response(flow, Decision.deny("upstream-unavailable", reasons.RESPONSE_BODY_UNSCRUBBABLE, detail=resp.stream.failed))
        else:
            flow.metadata["rr"]["reason"] = f"response cut short: {resp.stream.failed}"
    await settle_reservation(rr, flow)
    rr.finish(flow)

def websocket_message(flow: http.HTTPFlow) -> None:
    """Redact a message as `redact` says for its direction (rr_addon.core.message_redaction),
    and scrub the injected secret from a message the upstream sends (it may echo the
    upgrade's credential); mitmweb and `-w` show the message as changed here. A caller's
    messages are not scrubbed: it never had the secret. Each message is scanned whole
    (mitmproxy hands over complete messages), so a value within one is always caught."""
    message = flow.websocket.messages[-1] if flow.websocket is not None and flow.websocket.messages else None
    if message is None:
        return
    pipeline = flowstate.of(flow).pipeline or EMPTY
    redactor = pipeline.request_redactor if message.from_client else pipeline.response_redactor
    injection = None if message.from_client else wire.attached(flow.request)
    if redactor is None and (injection is None or not injection.scrub):
        return
    try:
        if redactor is not None:
            redacted, counts = redact_message(redactor, message.content)
            if redacted is not None:
                message.content = redacted
                records.count_redactions(flow, counts)
        if injection is not None and injection.scrub:
            clean = scrub_bytes(message.content, injection.scrub)
            if clean is not message.content:
                message.content = clean  # the mask is ASCII: a text message stays valid UTF-8
    except Exception:  # fail closed: a message rr could not scan is not passed on
        logger.exception("rr could not redact or scrub a WebSocket message of request %s; dropping it", flow.id)
        message.drop()

def measure_copy(flow: http.HTTPFlow, resp: http.Response) -> Measurement:
    """The meter values of a streamed response, from the copy its tap kept."""
    plan, copy, limit = flowstate.of(flow).metered.plan, resp.stream.tap, ctx.options.rr_buffer_limit
    if copy.over:
        return plan.measure(resp.headers, None, failed=TOO_LARGE)
    encoding = None if isinstance(resp.stream, Recoder) else resp.headers.get("content-encoding")  # a Recoder's tap sees decoded bytes
    return measure_body(plan, resp.headers, bytes(copy.buf), resp.headers.get("content-type"), encoding, limit)

async def settle(rr: Any, flow: http.HTTPFlow, measured: Measurement) -> None:
    """Count what the response_value meters read (replacing reservations); note the ones that could not measure."""
    state = flowstate.of(flow)
    metered, metering = state.metered, rr.gate.metering
    if metered is None or metering is None:
        return
    state.settled = True
    status = flow.response.status_code if flow.response is not None else None
    await metering.add(metered.plan.settle(measured, status))
    flow.metadata["rr"]["charged"] = metered.plan.charged(measured, status)
    if measured.unmeasured:
        flow.metadata["rr"]["unmeasured"] = dict(measured.unmeasured)


async def settle_reservation(rr: Any, flow: http.HTTPFlow) -> None:
    """A reservation no measurement settled (no response, or one rr did not read): released,
    or kept for a 2xx answer under `unmeasured: charge` (Plan.settle)."""
    state = flowstate.of(flow)
    if state.metered is not None and state.metered.plan.reserved and not state.settled:
        await settle(rr, flow, Measurement({}, {}))

async def process_buffered(rr: Any, flow: http.HTTPFlow, resp: http.Response, collected: BodyCollector) -> None:
    """Meters that read the body, filters, redaction and echo scrubbing of a buffered response."""
    limit = ctx.options.rr_buffer_limit
    resp.stream = False
    state = flowstate.of(flow)
    metered = state.metered
    counting = metered is not None and metered.plan.needs_response and rr.gate.metering is not None
    held_for = state.held_for or reasons.RESPONSE_TOO_LARGE  # why rr had to hold it back whole
    unscrubbable = state.unscrubbable
    if unscrubbable is not None:
        if counting:
            await settle(rr, flow, metered.plan.measure(resp.headers, None, failed=NOT_JSON))
        records.replace_response(flow, unscrubbable)
        return
    if collected.over:
        if counting:
            await settle(rr, flow, metered.plan.measure(resp.headers, None, failed=TOO_LARGE))
        records.replace_response(flow, Decision.deny("response-too-large", held_for, detail=f"over {limit} bytes"))
        return
    raw = bytes(collected.buf)
    ctype, encoding = resp.headers.get("content-type"), resp.headers.get("content-encoding")
    ops: list = []  # meter values, read from the document process_response parsed (before filters)
    injection = wire.attached(flow.request)
    result = process_response(
        state.pipeline or EMPTY,
        resp.status_code,
        ctype,
        encoding,
        raw,
        injection.scrub if injection else (),
        limit,
        inspect=(lambda doc: ops.append(metered.plan.measure(resp.headers, doc))) if counting else None,
    )
    if counting:
        if not ops:  # not a JSON body process_response parsed: read it (header meters need nothing)
            ops.append(measure_body(metered.plan, resp.headers, raw, ctype, encoding, limit))
        await settle(rr, flow, ops[0])
    if result.redactions:
        records.count_redactions(flow, result.redactions)
    if result.decision is not None:
        decision = result.decision
        if decision.code == "response-too-large":
            decision = dataclasses.replace(decision, reason=held_for)
        records.replace_response(flow, decision)
    elif result.body is not None:
        if (state.pipeline or EMPTY).filters and 200 <= resp.status_code < 300:
            flow.metadata["rr"]["filtered"] = True
        webview.show(flow)
        resp.headers.pop("content-encoding", None)
        resp.content = result.body
    else:
        resp.raw_content = raw

def measure_body(plan, headers, raw: bytes, ctype: str | None, encoding: str | None, limit: int) -> Measurement:
    """The meter values of a whole buffered body: JSON, or an (encoded) event stream."""
    try:
        body = decode_content(raw, encoding, limit=limit)
    except DecodedTooLarge:
        return plan.measure(headers, None, failed=TOO_LARGE)
    except BodyError:
        return plan.measure(headers, None, failed=NOT_JSON)
    if media_type(ctype) == "text/event-stream":
        reader = plan.events(headers, limit)
        reader(body)
        return reader.result()
    return plan.measure(headers, body)

async def error(rr: Any, flow: http.HTTPFlow) -> None:
    refused = wire.refusal(flow)
    state = flowstate.of(flow)
    if refused is not None and "rr" not in flow.metadata:
        if state.pending is not None and rr.snapshot is not None:  # refused while its body arrived
            records.record(flow, state.pending.admission.outcome(Decision.deny(*refused)), rr.snapshot)
        else:
            flow.metadata["rr"] = records.blank_meta(rr.snapshot)  # reached the connection undecided
    if "rr" not in flow.metadata or state.audited:
        return
    meta = flow.metadata["rr"]
    stream = flow.response.stream if flow.response is not None else None
    if isinstance(getattr(stream, "tap", None), EventMeasure):
        await settle(rr, flow, stream.tap.result(broken=True))  # what the caller got before the break
    elif (isinstance(stream, BodyCollector) or isinstance(getattr(stream, "tap", None), BodyCopy)) and (metered := state.metered) is not None and metered.plan.needs_response:
        await settle(rr, flow, metered.plan.measure(flow.response.headers, None, failed=STREAM_BROKEN))
    # nothing reached the caller yet (no response, or one held back to be filtered): answer in JSON
    if (flow.response is None or wire.deferred(flow)) and (meta["result"] != "deny" or refused is not None):
        refusal = rr.guard.refusal(flow)
        msg = flow.error.msg if flow.error else ""
        if refused is not None:
            decision = Decision.deny(*refused)
            logger.warning("rr refused request %s below the hooks: %s", flow.id, decision.reason)
        elif refusal is not None:
            decision = refusal
        elif isinstance(flow.response.stream if flow.response is not None else None, Recoder) and flow.response.stream.failed:
            decision = Decision.deny("upstream-unavailable", reasons.RESPONSE_BODY_UNSCRUBBABLE, detail=flow.response.stream.failed)
        elif state.timed_out or "timed out" in msg.lower() or "timeout" in msg.lower():
            decision = Decision.deny("upstream-timeout", reasons.UPSTREAM_TIMEOUT, detail=state.timed_out or msg)
        else:
            decision = Decision.deny("upstream-unavailable", reasons.UPSTREAM_UNAVAILABLE, detail=_with_hint(flow, msg))
        wire.answer_errors_with(flow, flows.decision_response(decision, flow.id))
        metered, metering = state.metered, rr.gate.metering
        if metered is not None and metering is not None and not _reached_upstream(flow, refused):
            await metering.add(metered.plan.refund())  # nothing went out: the quota is not used
            state.metered = None
        meta.update(result="deny", code=decision.code, reason=decision.reason, scope=decision.scope, rule=decision.rule)
        meta["status"] = decision.status
        if refused is not None:
            meta["result"] = "deny"
        webview.show(flow)
    elif isinstance(stream, Recoder) and stream.failed:  # rr stopped reading it: the caller's stream is cut
        meta["reason"] = f"response cut short: {stream.failed}"
    await settle_reservation(rr, flow)
    rr.finish(flow)


def _reached_upstream(flow: http.HTTPFlow, refused) -> bool:
    """Whether any of the request may have reached the upstream: rr refused it below
    the hooks, or its connection never opened (refused, failed, or its TLS handshake
    failed), then nothing went out. A connection that was open counts as reached."""
    if refused is not None:
        return False
    server = flow.server_conn
    if server is None or server.timestamp_tcp_setup is None:
        return False
    return not (server.tls and server.timestamp_tls_setup is None)


UNTRUSTED_CA_HINT = (
    "if the upstream's certificate is issued by a private CA, trust that CA with "
    "--set ssl_verify_upstream_trusted_ca=/path/to/ca.pem (see README, Upstreams with a private CA)"
)


def _with_hint(flow: http.HTTPFlow, msg: str) -> str:
    """mitmproxy's upstream error, with what to do about a certificate rr cannot verify."""
    if "certificate verify failed" not in msg.lower():
        return msg
    logger.warning("rr: upstream certificate of %s:%s is not trusted (%s); %s", flow.request.host, flow.request.port, msg, UNTRUSTED_CA_HINT)
    return f"{msg}; {UNTRUSTED_CA_HINT}"
