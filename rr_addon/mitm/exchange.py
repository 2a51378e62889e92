"""An admitted exchange in transit: its timeouts, and cutting its upstream connection off."""

from __future__ import annotations

import asyncio
import logging

from mitmproxy import ctx, http

from rr_addon import timeouts
from rr_addon.mitm import flowstate

logger = logging.getLogger("rr")

STREAM_REQUESTS_OVER = 1024 * 1024  # bytes; larger request bodies that no rule reads are streamed


class ByteCounter:
    """A `request.stream` callable: passes the body through, counting it."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, chunk: bytes) -> bytes:
        self.count += len(chunk)
        return chunk


def streams_request(flow: http.HTTPFlow) -> bool:
    """Decided without the body: a large upload streams through instead of filling memory
    (small bodies stay buffered, so mitmweb and -w can show them). A body of unknown
    length (chunked, or HTTP/2 and /3 without content-length) streams too: it could be
    any size (wire.framed_for_http1 frames it for an HTTP/1 upstream)."""
    length = flow.request.headers.get("content-length", "")
    unknown = not length and (flow.request.is_http2 or flow.request.is_http3)
    return unknown or "chunked" in flow.request.headers.get("transfer-encoding", "").lower() or (length.isdigit() and int(length) > STREAM_REQUESTS_OVER)


def watch(flow: http.HTTPFlow) -> timeouts.Watch:
    """The first-byte and idle timeouts of an admitted exchange (see rr_addon.timeouts)."""
    state = flowstate.of(flow)
    if state.watch is None:

        def moved() -> int:
            req, resp = flow.request.stream, flow.response.stream if flow.response is not None else None
            return getattr(req, "count", 0) + getattr(resp, "count", 0)

        opts = ctx.options
        state.watch = timeouts.Watch(opts.rr_first_byte_timeout, opts.rr_idle_timeout, moved, lambda which: cut_off(flow, which))
    return state.watch


def cut_off(flow: http.HTTPFlow, which: str) -> None:
    """A timeout expired: close the upstream connection (mitmproxy cannot kill a flow
    in transit). The caller gets 504 if nothing reached it yet; else the body breaks off."""
    state = flowstate.of(flow)
    if not flow.live or state.audited:
        return
    option = {timeouts.FIRST_BYTE: "rr_first_byte_timeout", timeouts.IDLE: "rr_idle_timeout"}[which]
    state.timed_out = f"{which} timeout: {option} is {getattr(ctx.options, option)} s"
    io = upstream_io(flow)
    if io is not None:
        logger.info("rr cuts off %s: %s (request %s)", flow.request.host, state.timed_out, flow.id)
        io.handler.cancel("rr: upstream timed out")


def abandon(flow: http.HTTPFlow) -> None:
    """A streamed body stopped decoding: nothing more of it can be passed on, so stop
    reading the upstream now rather than at its end (the caller is not left waiting).
    Called from inside mitmproxy's processing of the upstream's data: the connection's
    task is cancelled once that returns, where mitmproxy expects a cancellation."""
    io = upstream_io(flow)
    if io is not None:
        logger.info("rr stops reading %s: the response body cannot be scrubbed (request %s)", flow.request.host, flow.id)
        asyncio.get_running_loop().call_soon(io.handler.cancel, "rr: response body cannot be scrubbed")


def upstream_io(flow: http.HTTPFlow):
    """mitmproxy's transport of this flow's upstream connection (its reading task: `.handler`), or None."""
    server = ctx.master.addons.get("proxyserver")
    handler = server.connections.get(flow.client_conn.id) if server is not None else None
    io = handler.transports.get(flow.server_conn) if handler is not None else None
    return io if io is not None and io.handler is not None else None
