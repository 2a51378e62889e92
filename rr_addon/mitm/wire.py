"""Where rr touches bytes on their way to a connection, below every view.

mitmproxy hands a flow to its views (mitmweb's list, REST API and live
updates; `-w`) after every hook, so a secret set on a flow in any hook is
visible. rr therefore never puts a secret on a flow: the flow carries a
placeholder, and the real value is applied to a private copy of the request
at the moment mitmproxy passes the request headers to the upstream
connection layer (HTTP/1, HTTP/2 and HTTP/3 alike). Nothing but that
connection ever sees the copy.

What goes out is what was decided (docs/security.md). When rr decides a request
it stamps the request with what it decided on — method, scheme, host, port,
authority, path and query, header fields, and the body once it is in — and
`HttpStream.make_server_connection` is wrapped so that, before a connection is
opened and again once it is open (nothing can run between that point and the
request leaving), a request whose stamp is missing or no longer matches is
refused instead of sent: an edit in mitmweb, a script or another addon after
the decision never reaches the upstream, with or without the secret.

The same seam lets rr answer a failed upstream connection with its own JSON
error instead of mitmproxy's HTML page, and hold back a response that must be
filtered: a deferred flow's response headers and body are not passed to the
client as they arrive; when the message ends — after the `response` hook has
replaced the body, or the whole response — the flow's response is sent whole.
A guarded flow (a compressed body rr decodes, scrubs and encodes again as it
streams) keeps its response headers back until the first body bytes are ready:
if the body cannot be decoded before then, the caller gets rr's answer
instead; if it fails after bytes went out, the caller's stream is cut
(HTTP/1 connection closed, HTTP/2 stream reset) instead of ending cleanly, so
no client takes a body rr could not scan for complete.

The wrappers here are put in place by `rr_addon.mitm.patches` (with every
other patch of a mitmproxy internal): `route` wraps `HttpLayer.event_to_child`,
mitmproxy's single routing point for HTTP events between streams and
connections, `guarded_connection` `HttpStream.make_server_connection` and
`whole_bodies` `HttpStream.check_body_size`. The patches check the shapes
they rely on, so a mitmproxy that changed them fails loudly at start instead of
leaking or forwarding without secrets.
"""

from __future__ import annotations

import copy
import logging
from typing import Callable

from mitmproxy import http
from mitmproxy.utils import human
from mitmproxy.proxy.layers.http import ErrorCode, HttpLayer, HttpStream
from mitmproxy.proxy.layers.http._events import (
    RequestHeaders,
    RequestProtocolError,
    ResponseData,
    ResponseEndOfMessage,
    ResponseHeaders,
    ResponseProtocolError,
    ResponseTrailers,
)

from rr_addon.core.inject import Injection
from rr_addon.mitm import flowstate

logger = logging.getLogger(__name__)

_PLAN = "_rr_stamp"  # attribute on http.Request: the Stamp of what rr decided (and the Injection to apply)
_SENT = "sent"
# The flow's side of the seam (refusal, whole body, error answer, deferred, guard, cut) is in its FlowState.


_UNSET = object()  # a stamp's body before the request's body is in


class Stamp:
    """What rr decided on for one request, and the injection it allows.

    Fields hold references to the request's own immutable values (bytes, the
    header tuple), so stamping copies nothing and an unchanged request
    compares by identity."""

    __slots__ = ("injection", "method", "scheme", "host", "port", "authority", "path", "fields", "body", "trailers")

    def __init__(self, data: http.RequestData, injection: Injection | None) -> None:
        self.injection = injection
        self.method, self.scheme, self.host, self.port = data.method, data.scheme, data.host, data.port
        self.authority, self.path, self.fields = data.authority, data.path, _sent_fields(data.headers)
        self.body = self.trailers = _UNSET
        if data.content is not None:
            self.seal_body(data)

    def seal_body(self, data: http.RequestData) -> None:
        """The body is in (and was read, or needs no reading): it is part of what goes out."""
        self.body = data.content
        self.trailers = data.trailers.fields if data.trailers is not None else None

    def differs(self, data: http.RequestData) -> str | None:
        """The first element of the request that is not what was decided, or None."""
        if data.method != self.method or data.scheme != self.scheme:
            return "method or scheme"
        if data.host != self.host or data.port != self.port or data.authority != self.authority:
            return "destination"
        if data.path != self.path:
            return "path or query"
        if data.headers.fields != self.fields and _sent_fields(data.headers) != self.fields:
            return "headers"
        if self.body is not _UNSET and data.content != self.body:
            return "body"
        if self.trailers is not _UNSET and (data.trailers.fields if data.trailers is not None else None) != self.trailers:
            return "trailers"
        return None


def _sent_fields(headers: http.Headers) -> tuple:
    """The header fields as they will be sent: mitmproxy answers `Expect: 100-continue`
    itself and removes it after the requestheaders hook."""
    fields = headers.fields
    if "expect" in headers:
        fields = tuple((k, v) for k, v in fields if not (k.lower() == b"expect" and v.strip().lower() == b"100-continue"))
    return fields


def stamp(request: http.Request, injection: Injection | None) -> None:
    """Record that rr decided on `request` as it is now, to be sent with `injection`."""
    setattr(request, _PLAN, Stamp(request.data, injection))


def seal_body(request: http.Request) -> None:
    found = getattr(request, _PLAN, None)
    if found is not None:
        found.seal_body(request.data)


def detach(request: http.Request) -> None:
    if hasattr(request, _PLAN):
        delattr(request, _PLAN)


def attached(request: http.Request) -> Injection | None:
    found = getattr(request, _PLAN, None)
    return found.injection if found is not None else None


def refusal(flow: http.HTTPFlow) -> tuple[str, str] | None:
    """(code, reason) of a refusal below the hooks (see `guarded_connection`, `whole_bodies`), or None."""
    state = flowstate.peek(flow)
    return state.refusal if state is not None else None


def read_whole(flow: http.HTTPFlow, limit: int, reason: str) -> None:
    """rr decides on this request's body: buffer it whatever `stream_large_bodies` says;
    over `limit` bytes it is refused (413, `reason`) as it arrives."""
    flow.request.stream = False
    flowstate.of(flow).whole = (limit, reason)


def answer_errors_with(flow: http.HTTPFlow, response: http.Response) -> None:
    """If this flow's upstream fails before a response arrives, send `response`."""
    flowstate.of(flow).error_answer = response


def defer(flow: http.HTTPFlow) -> None:
    """Hold this flow's response back from the client until the message ends."""
    flowstate.of(flow).deferred = True


def deferred(flow: http.HTTPFlow) -> bool:
    """Whether nothing of this flow's response has reached the client yet, and rr holds it back."""
    state = flowstate.peek(flow)
    return state is not None and (state.deferred or isinstance(state.guard, ResponseHeaders))


def guard(flow: http.HTTPFlow) -> None:
    """Hold this flow's streamed response headers until its first body bytes; see `cut`."""
    flowstate.of(flow).guard = True


def cut(flow: http.HTTPFlow) -> None:
    """This flow's streamed body cannot go on: if nothing reached the client, it gets
    `flow.response` (rr's answer) whole at the end of the message; else its stream is cut."""
    flowstate.of(flow).cut = True


def query_suffix(injection: Injection, *, wire: bool) -> str:
    """The query parameters the injection appends, encoded."""
    from urllib.parse import quote

    pairs = [(n, w if wire else s) for n, w, s in injection.query]
    return "&".join(f"{quote(n, safe='')}={quote(v, safe='')}" for n, v in pairs)


def wire_request(request: http.Request, injection: Injection) -> http.Request | None:
    """A private copy of `request` with the real secret values. None if the
    flow no longer carries the placeholders rr put there (fail closed)."""
    wire = copy.copy(request)
    wire.data = copy.copy(request.data)
    fields = list(request.headers.fields)
    for name, value, shown in injection.headers:
        # exactly one field of that name, still holding the placeholder (as on the flow)
        key = name.encode("utf-8", "surrogateescape").lower()
        found = [i for i, (k, _) in enumerate(fields) if k.lower() == key]
        if len(found) != 1 or fields[found[0]][1] != shown.encode("utf-8", "surrogateescape"):
            return None
        fields[found[0]] = (fields[found[0]][0], value.encode("utf-8", "surrogateescape"))
    wire.data.headers = http.Headers(fields)
    if injection.query:
        shown_q, real_q = query_suffix(injection, wire=False), query_suffix(injection, wire=True)
        path = request.data.path
        if not path.endswith(shown_q.encode()):
            return None
        wire.data.path = path[: len(path) - len(shown_q)] + real_q.encode()
    return wire


def _check(flow: http.HTTPFlow) -> str | None:
    """The reason (from rr_addon.core.reasons) to refuse sending this flow's request, or None."""
    from rr_addon.core import reasons

    found = getattr(flow.request, _PLAN, None)
    if found is None:
        return reasons.UNDECIDED
    what = found.differs(flow.request.data)
    if what is not None:
        logger.warning("rr refuses request %s: its %s changed after the decision", flow.id, what)
        return reasons.CHANGED_AFTER_DECISION
    return None


def guarded_connection(original: Callable):
    def make_server_connection(self: HttpStream):
        # before connecting (an edited destination is never contacted) and after (the
        # connection may take a while; from here to the request leaving, nothing else runs)
        reason = _check(self.flow)
        if reason is None:
            ok = yield from original(self)
            if not ok:
                return False
            reason = _check(self.flow) or _private_peer(self)
            if reason is None:
                return True
        yield from _refuse(self, "access-denied", reason)
        return False

    return make_server_connection


def _private_peer(stream: HttpStream) -> str | None:
    """A keep-alive connection opened for a target that allows private addresses (so its
    address was never checked) may be reused by a request whose target does not: the
    address it is connected to must then be globally routable too."""
    from rr_addon.core import reasons
    from rr_addon.core.addresses import is_global_address

    state = flowstate.peek(stream.flow)
    server = stream.context.server
    if (state is not None and state.private_ok) or server.via is not None or not server.peername:
        return None
    if is_global_address(server.peername[0]):
        return None
    logger.warning("rr refuses request %s: its connection reaches %s, which is not globally routable", stream.flow.id, server.peername[0])
    return reasons.PRIVATE_ADDRESS


def _refuse(stream: HttpStream, code: str, reason: str):
    """Fail the stream as mitmproxy fails a connection: the error hook runs, and rr's
    `error` hook answers the caller with (code, reason) in JSON (see `answer_errors_with`)."""
    flowstate.of(stream.flow).refusal = (code, reason)
    yield from stream.handle_protocol_error(ResponseProtocolError(stream.stream_id, f"rr refused: {reason}", ErrorCode.GENERIC_SERVER_ERROR))


def whole_bodies(original: Callable):
    """mitmproxy streams a request body past `stream_large_bodies` before the `request` hook,
    even one whose content-length was unknown at `requestheaders` (chunked, HTTP/2): for a
    body rr must read to decide, keep buffering it, and refuse it once over rr's limit."""

    def check_body_size(self: HttpStream, request: bool):
        state = flowstate.peek(self.flow) if request else None
        whole = state.whole if state is not None else None
        if whole is None:
            return (yield from original(self, request))
        limit, reason = whole
        if len(self.request_body_buf) > limit:
            self.request_body_buf.clear()
            yield from _refuse(self, "payload-too-large", reason)
            self.client_state = self.state_errored
            return True
        total = human.parse_size(self.context.options.body_size_limit)
        if total is not None and len(self.request_body_buf) > total:
            return (yield from original(self, request))  # mitmproxy's own hard limit still applies
        return False

    return check_body_size


def framed_for_http1(request: http.Request, end_stream: bool, upstream_alpn: bytes | None) -> http.Request:
    """The request as an HTTP/1 upstream must receive it: with a length or chunked framing.

    An HTTP/2 or HTTP/3 request may carry a body without `content-length` (its
    frames delimit it). mitmproxy's Http1Client converts such a request to
    HTTP/1.1 without adding any framing (with `connection_strategy=lazy`, which
    rr forces, the upstream protocol is chosen per request), so the upstream
    would read an empty body and take the body bytes for the next request. A
    body that is buffered gets its `content-length`; one that streams is sent
    `Transfer-Encoding: chunked` (Http1Client frames each data event by that
    header). Only the private copy sent to the connection changes: the flow,
    and the custody stamp compared with it, keep the request as decided."""
    if end_stream or not (request.is_http2 or request.is_http3) or upstream_alpn in (b"h2", b"h3") or (upstream_alpn or b"").startswith(b"h3-"):
        return request
    if "content-length" in request.headers or "transfer-encoding" in request.headers:
        return request
    out = copy.copy(request)
    out.data = copy.copy(request.data)
    out.data.headers = request.headers.copy()
    if request.data.content is None:  # streaming: the length is not known yet
        out.data.headers["transfer-encoding"] = "chunked"
    else:
        out.data.headers["content-length"] = str(len(request.data.content))
    return out


def route(self: HttpLayer, child, event, _original: Callable):
    if type(event) is RequestProtocolError:
        if isinstance(child, HttpStream):
            _client_left(child)
        return _original(self, child, event)
    if not isinstance(child, HttpStream):
        if type(event) is RequestHeaders:
            request = event.request
            found = getattr(request, _PLAN, None)
            injection = found.injection if found is not None else None
            if injection is not None:
                wire = wire_request(request, injection)
                if wire is None:
                    logger.error("rr: placeholders were changed after the decision; sending the request without secrets")
                else:
                    request = wire
            stream = self.streams.get(event.stream_id)
            server = stream.context.server if isinstance(stream, HttpStream) else None
            if server is not None:
                request = framed_for_http1(request, event.end_stream, server.alpn)
            if request is not event.request:
                event = RequestHeaders(stream_id=event.stream_id, request=request, end_stream=event.end_stream, replay_flow=event.replay_flow)
        elif type(event) is ResponseProtocolError:
            stream = self.streams.get(event.stream_id)
            flow = getattr(stream, "flow", None)
            state = flowstate.peek(flow) if flow is not None else None
            answer = state.error_answer if state is not None else None
            self.__dict__.get(_HELD_STREAMS, {}).pop(event.stream_id, None)
            if answer is not None:
                state.error_answer = None
                return _send_response(self, child, event.stream_id, answer, _original)
        elif type(event) in _HELD:
            # The stream may already be dropped when its end-of-message passes (mitmproxy
            # drops it first), so held streams are remembered on the layer. Not in FlowState:
            # this map is how the flow (and so its state) is found from a stream id at all.
            held: dict = self.__dict__.setdefault(_HELD_STREAMS, {})
            flow = held.get(event.stream_id)
            if flow is None:
                stream = self.streams.get(event.stream_id)
                flow = getattr(stream, "flow", None)
                state = flowstate.peek(flow) if flow is not None else None
                if state is None or not (state.deferred or state.guard):
                    return _original(self, child, event)
                held[event.stream_id] = flow
            state = flowstate.of(flow)
            if not state.deferred:
                return _guarded(self, child, event, flow, held, _original)
            if type(event) is ResponseEndOfMessage:
                del held[event.stream_id]
                state.deferred = False
                return _send_response(self, child, event.stream_id, flow.response, _original)
            return _nothing()
    return _original(self, child, event)


_HELD = (ResponseHeaders, ResponseData, ResponseTrailers, ResponseEndOfMessage)
WATCHED = frozenset({RequestHeaders, RequestProtocolError, ResponseProtocolError, *_HELD})  # the few event types `route` concerns itself with
_HELD_STREAMS = "_rr_held_streams"  # on an HttpLayer: stream id -> deferred or guarded flow


def _nothing():
    yield from ()


def _client_left(stream: HttpStream) -> None:
    """The client gave up on this request (an HTTP/2 or HTTP/3 stream reset, or its request
    broke off). mitmproxy tells the stream only once the hook it waits on returns; a request
    held for approval learns it now (rr_addon.mitm.approvals)."""
    flow = getattr(stream, "flow", None)
    state = flowstate.peek(flow) if flow is not None else None
    if state is not None:
        state.client_left = True
        if state.hold_wake is not None:
            state.hold_wake.set()


def _guarded(self: HttpLayer, child, event, flow: http.HTTPFlow, held: dict, _original: Callable):
    """A guarded flow's response events on their way to the client (see `guard`, `cut`)."""
    state = flowstate.of(flow)
    kind, head = type(event), state.guard
    if kind is ResponseEndOfMessage:
        del held[event.stream_id]
    if kind is ResponseHeaders:
        state.guard = event  # waits for the first body bytes
        return _nothing()
    if state.cut or (isinstance(head, ResponseHeaders) and flow.response is not head.response):
        if isinstance(head, ResponseHeaders):  # nothing reached the client: it gets rr's answer (a replaced response)
            if kind is not ResponseEndOfMessage:
                return _nothing()
            state.guard = _SENT
            return _send_response(self, child, event.stream_id, flow.response, _original)
        if head == _SENT and kind is ResponseEndOfMessage:  # the body must not look complete
            return _original(self, child, ResponseProtocolError(event.stream_id, "rr: response body cannot be scrubbed", ErrorCode.KILL))
        return _nothing()
    if isinstance(head, ResponseHeaders):
        state.guard = _SENT
        return _then(_original(self, child, head), _original(self, child, event))
    return _original(self, child, event)


def _then(*generators):
    for g in generators:
        yield from g


def _send_response(self: HttpLayer, child, stream_id: int, response: http.Response, _original: Callable):
    body = response.raw_content or b""
    response.headers.pop("transfer-encoding", None)
    response.headers["content-length"] = str(len(body))
    yield from _original(self, child, ResponseHeaders(stream_id, response, end_stream=False))
    if body:
        yield from _original(self, child, ResponseData(stream_id, body))
    yield from _original(self, child, ResponseEndOfMessage(stream_id))
