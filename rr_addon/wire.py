"""Where rr touches bytes on their way to a connection, below every view.

mitmproxy hands a flow to its views (mitmweb's list, REST API and live
updates; `-w`) after every hook, so a secret set on a flow in any hook is
visible. rr therefore never puts a secret on a flow: the flow carries a
placeholder, and the real value is applied to a private copy of the request
at the moment mitmproxy passes the request headers to the upstream
connection layer (HTTP/1, HTTP/2 and HTTP/3 alike). Nothing but that
connection ever sees the copy.

The same seam lets rr answer a failed upstream connection with its own JSON
error instead of mitmproxy's HTML page, and hold back a response that must be
filtered: a deferred flow's response headers and body are not passed to the
client as they arrive; when the message ends — after the `response` hook has
replaced the body, or the whole response — the flow's response is sent whole.

This wraps `HttpLayer.event_to_child`, mitmproxy's single routing point for
HTTP events between streams and connections. `install()` is idempotent and
checks the shape it relies on, so a mitmproxy that changed it fails loudly at
start instead of leaking or forwarding without secrets.
"""

from __future__ import annotations

import copy
import inspect
import logging
from typing import Callable

from mitmproxy import http
from mitmproxy.proxy.layers.http import HttpLayer, HttpStream
from mitmproxy.proxy.layers.http._events import (
    RequestHeaders,
    ResponseData,
    ResponseEndOfMessage,
    ResponseHeaders,
    ResponseProtocolError,
    ResponseTrailers,
)

from rr_addon.core.inject import Injection

logger = logging.getLogger(__name__)

_PLAN = "_rr_injection"  # attribute on http.Request: the Injection to apply on the wire
_ANSWER = "_rr_error_answer"  # attribute on HTTPFlow: the response to send instead of a protocol error
_MARK = "_rr_wrapped"
_DEFER = "_rr_deferred"  # attribute on HTTPFlow: send the response whole, at its end


def attach(request: http.Request, injection: Injection) -> None:
    """Have `injection` applied to this request when it is sent upstream."""
    setattr(request, _PLAN, injection)


def detach(request: http.Request) -> None:
    if hasattr(request, _PLAN):
        delattr(request, _PLAN)


def attached(request: http.Request) -> Injection | None:
    return getattr(request, _PLAN, None)


def answer_errors_with(flow: http.HTTPFlow, response: http.Response) -> None:
    """If this flow's upstream fails before a response arrives, send `response`."""
    setattr(flow, _ANSWER, response)


def defer(flow: http.HTTPFlow) -> None:
    """Hold this flow's response back from the client until the message ends."""
    setattr(flow, _DEFER, True)


def deferred(flow: http.HTTPFlow) -> bool:
    return getattr(flow, _DEFER, False)


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


def _route(self: HttpLayer, child, event, _original: Callable):
    if not isinstance(child, HttpStream):
        if type(event) is RequestHeaders:
            injection = getattr(event.request, _PLAN, None)
            if injection is not None:
                wire = wire_request(event.request, injection)
                if wire is None:
                    logger.error("rr: placeholders were changed after the decision; sending the request without secrets")
                else:
                    event = RequestHeaders(
                        stream_id=event.stream_id, request=wire, end_stream=event.end_stream, replay_flow=event.replay_flow
                    )
        elif type(event) is ResponseProtocolError:
            stream = self.streams.get(event.stream_id)
            flow = getattr(stream, "flow", None)
            answer = getattr(flow, _ANSWER, None) if flow is not None else None
            if answer is not None:
                delattr(flow, _ANSWER)
                self.__dict__.get(_HELD_STREAMS, {}).pop(event.stream_id, None)
                return _send_response(self, child, event.stream_id, answer, _original)
        elif type(event) in _HELD:
            # The stream may already be dropped when its end-of-message passes (mitmproxy
            # drops it first), so held streams are remembered on the layer.
            held: dict = self.__dict__.setdefault(_HELD_STREAMS, {})
            flow = held.get(event.stream_id)
            if flow is None:
                stream = self.streams.get(event.stream_id)
                flow = getattr(stream, "flow", None)
                if flow is None or not getattr(flow, _DEFER, False):
                    return _original(self, child, event)
                held[event.stream_id] = flow
            if type(event) is ResponseEndOfMessage:
                del held[event.stream_id]
                delattr(flow, _DEFER)
                return _send_response(self, child, event.stream_id, flow.response, _original)
            return _nothing()
    return _original(self, child, event)


_HELD = (ResponseHeaders, ResponseData, ResponseTrailers, ResponseEndOfMessage)
_HELD_STREAMS = "_rr_held_streams"  # on an HttpLayer: stream id -> deferred flow


def _nothing():
    yield from ()


def _send_response(self: HttpLayer, child, stream_id: int, response: http.Response, _original: Callable):
    body = response.raw_content or b""
    response.headers.pop("transfer-encoding", None)
    response.headers["content-length"] = str(len(body))
    yield from _original(self, child, ResponseHeaders(stream_id, response, end_stream=False))
    if body:
        yield from _original(self, child, ResponseData(stream_id, body))
    yield from _original(self, child, ResponseEndOfMessage(stream_id))


def install() -> None:
    current = HttpLayer.event_to_child
    if getattr(current, _MARK, False):
        return
    params = list(inspect.signature(current).parameters)
    if params != ["self", "child", "event"] or not hasattr(RequestHeaders, "__dataclass_fields__"):
        raise RuntimeError(f"rr cannot install its wire hook on this mitmproxy (HttpLayer.event_to_child{params})")
    fields = RequestHeaders.__dataclass_fields__
    if not {"request", "end_stream", "replay_flow"} <= set(fields):
        raise RuntimeError("rr cannot install its wire hook: RequestHeaders changed shape")

    watched = frozenset({RequestHeaders, ResponseProtocolError, *_HELD})

    def event_to_child(self, child, event):
        # ~27 events per request pass here; only these few types concern rr
        if type(event) in watched:
            return _route(self, child, event, current)
        return current(self, child, event)

    setattr(event_to_child, _MARK, True)
    HttpLayer.event_to_child = event_to_child  # type: ignore[method-assign]
