"""Every place rr replaces a piece of mitmproxy's internals, in one module.

Each patch checks first that the internal still has the shape rr relies on and
raises `RuntimeError` naming it otherwise: a mitmproxy that changed one fails
loudly at start, never leaks a secret, forwards an undecided request or quietly
loses a hook. `tests/mitm/test_patches.py` runs every check against the
installed mitmproxy.

- The wire seam (`rr_addon.mitm.wire`): `HttpLayer.event_to_child`,
  `HttpStream.make_server_connection`, `HttpStream.check_body_size`; it also
  relies on `Http1Client.send` (framing) and `Http1Server.send` (cutting).
- `AddonManager.trigger_event`: the runner's faster dispatch (`FastDispatch`).
- `MessageData.__post_init__`: the per-message type checks `rr run` skips.
- The receivers of `OptionManager.changed`: the runner's lean chain wakes
  dormant addons before the addon manager configures the chain.
- `mode_servers.asyncio.start_server`: the workers of `rr run --workers N`
  listen with SO_REUSEPORT (`rr_addon.workers`).
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, Callable

from mitmproxy import addonmanager, http
from mitmproxy.proxy.layers.http import ErrorCode, HttpLayer, HttpStream
from mitmproxy.proxy.layers.http._events import RequestHeaders
from mitmproxy.proxy.layers.http._http1 import Http1Client, Http1Server

from rr_addon.mitm import wire

_MARK = "_rr_wrapped"


# ---------------------------------------------------------------------------- shape checks


def _wire_shapes() -> list[str]:
    problems = []
    connect = HttpStream.make_server_connection
    if list(inspect.signature(connect).parameters) != ["self"] or not inspect.isgeneratorfunction(_unwrapped(connect)):
        problems.append("rr cannot guard upstream connections on this mitmproxy (HttpStream.make_server_connection changed shape)")
    sizes = HttpStream.check_body_size
    if list(inspect.signature(sizes).parameters) != ["self", "request"] or not inspect.isgeneratorfunction(_unwrapped(sizes)):
        problems.append("rr cannot keep request bodies whole on this mitmproxy (HttpStream.check_body_size changed shape)")
    if "request_body_buf" not in inspect.getsource(HttpStream.__init__):
        problems.append("rr cannot keep request bodies whole on this mitmproxy (HttpStream.request_body_buf is gone)")
    if list(inspect.signature(HttpStream.handle_protocol_error).parameters) != ["self", "event"]:
        problems.append("rr cannot refuse requests at the connection on this mitmproxy (HttpStream.handle_protocol_error changed shape)")
    framing = inspect.getsource(Http1Client.send)
    if "self.request = event.request" not in framing or '"chunked" in self.request.headers.get("transfer-encoding"' not in framing:
        problems.append("rr cannot frame streamed request bodies for HTTP/1 upstreams on this mitmproxy (Http1Client.send changed shape)")
    server_send = inspect.getsource(Http1Server.send)
    if not hasattr(ErrorCode, "KILL") or "ResponseProtocolError" not in server_send or "CloseConnection" not in server_send:
        problems.append("rr cannot cut a response it cannot scrub on this mitmproxy (Http1Server.send or ErrorCode changed shape)")
    params = list(inspect.signature(HttpLayer.event_to_child).parameters)
    if params != ["self", "child", "event"] or not hasattr(RequestHeaders, "__dataclass_fields__"):
        problems.append(f"rr cannot install its wire hook on this mitmproxy (HttpLayer.event_to_child{params})")
    elif not {"request", "end_stream", "replay_flow"} <= set(RequestHeaders.__dataclass_fields__):
        problems.append("rr cannot install its wire hook: RequestHeaders changed shape")
    return problems


def _dispatch_shape() -> list[str]:
    trigger = addonmanager.AddonManager.trigger_event
    if list(inspect.signature(trigger).parameters) != ["self", "event"] or not inspect.iscoroutinefunction(trigger):
        return ["rr cannot dispatch hooks on this mitmproxy (AddonManager.trigger_event changed shape)"]
    if not hasattr(addonmanager.AddonManager, "invoke_addon") or not hasattr(addonmanager.AddonManager, "_configure_all"):
        return ["rr cannot dispatch hooks on this mitmproxy (AddonManager.invoke_addon or _configure_all is gone)"]
    return []


def _typecheck_shape() -> list[str]:
    post_init = getattr(http.MessageData, "__post_init__", None)
    if post_init is not None and list(inspect.signature(post_init).parameters) != ["self"]:
        return ["rr cannot skip message type checks on this mitmproxy (MessageData.__post_init__ changed shape)"]
    return []


def _receivers_shape() -> list[str]:
    from mitmproxy.utils import signals

    if not hasattr(signals, "make_weak_ref") or "receivers" not in inspect.getsource(signals.SyncSignal):
        return ["rr cannot route option changes on this mitmproxy (signals.SyncSignal.receivers or make_weak_ref is gone)"]
    return []


def _options_shape() -> list[str]:
    from mitmproxy import optmanager

    option = getattr(optmanager, "_Option", None)
    if (
        option is None
        or not hasattr(optmanager, "unset")
        or not {"value", "_default"} <= set(getattr(option, "__slots__", ()))
        or "return copy.deepcopy(v)" not in inspect.getsource(_unwrapped(option.current))
        or "copy.deepcopy(self._default)" not in inspect.getsource(option.default.fget)
    ):
        return ["rr cannot read options without copies on this mitmproxy (optmanager._Option changed shape)"]
    return []


def _listen_shape() -> list[str]:
    from mitmproxy.proxy import mode_servers

    if "asyncio.start_server(self.handle_stream, host, port)" not in inspect.getsource(mode_servers.AsyncioServerInstance.listen):
        return ["rr cannot share a listening port between workers on this mitmproxy (AsyncioServerInstance.listen changed shape)"]
    return []


def check_shapes() -> list[str]:
    """What rr would refuse to patch on the installed mitmproxy (empty: everything fits)."""
    return _wire_shapes() + _dispatch_shape() + _typecheck_shape() + _receivers_shape() + _listen_shape() + _options_shape()


def _unwrapped(func: Callable) -> Callable:
    return getattr(func, "__wrapped_original__", func)


def _fail_on(problems: list[str]) -> None:
    if problems:
        raise RuntimeError("; ".join(problems))


# ---------------------------------------------------------------------------- patches


def install_wire() -> None:
    """The wire seam (rr_addon.mitm.wire); idempotent. Loaded with the addon."""
    current = HttpLayer.event_to_child
    if getattr(current, _MARK, False):
        return
    _fail_on(_wire_shapes())
    connect, sizes = HttpStream.make_server_connection, HttpStream.check_body_size
    watched, route = wire.WATCHED, wire.route

    def event_to_child(self, child, event):
        # ~27 events per request pass here; only these few types concern rr
        if type(event) in watched:
            return route(self, child, event, current)
        return current(self, child, event)

    guarded, whole = wire.guarded_connection(connect), wire.whole_bodies(sizes)
    for patched, original in ((event_to_child, current), (guarded, connect), (whole, sizes)):
        setattr(patched, _MARK, True)
        patched.__wrapped_original__ = original  # type: ignore[attr-defined]
    HttpStream.make_server_connection = guarded  # type: ignore[method-assign]
    HttpStream.check_body_size = whole  # type: ignore[method-assign]
    HttpLayer.event_to_child = event_to_child  # type: ignore[method-assign]


def install_dispatch(manager: Any, dispatch: Callable) -> None:
    """Replace one master's `AddonManager.trigger_event` with `dispatch` (runner.FastDispatch)."""
    _fail_on(_dispatch_shape())
    manager.trigger_event = dispatch


def skip_message_typechecks() -> None:
    """Turn off mitmproxy's type check of every field of every request and response it builds.

    `MessageData.__post_init__` exists only `if __debug__` (`python -O` drops it, and
    every assert with it): a debugging aid that tells an addon author at once that
    a field got the wrong type. It costs ~50 µs per request and ~30 µs per response
    here (`typecheck.check_option_type` walks each annotation), a few percent of
    the proxy's CPU per request. rr's own messages are built under the checks in
    its tests, so `rr run` skips them unless user scripts are loaded (`-s`): their
    authors keep the early error."""
    _fail_on(_typecheck_shape())
    http.MessageData.__post_init__ = _no_typecheck  # type: ignore[attr-defined]


def _no_typecheck(self: object) -> None:
    pass


_IMMUTABLE = frozenset({str, int, bool, float, bytes, type(None)})


def read_options_without_copies() -> None:
    """Every read of an option (`ctx.options.x`, ~15 per request between mitmproxy
    and rr) deep-copies its value twice (`_Option.current` and `_Option.default`),
    so that a caller cannot change the stored value through what it got. A str,
    int, bool, float, bytes or None cannot be changed and `copy.deepcopy` returns
    it as it is: those are returned without the two calls; every other value (lists,
    tuples, dicts) is still copied. Idempotent."""
    from mitmproxy import optmanager

    current = optmanager._Option.current
    if getattr(current, _MARK, False):
        return
    _fail_on(_options_shape())
    unset, deepcopy, immutable = optmanager.unset, copy.deepcopy, _IMMUTABLE

    def fast_current(self) -> Any:
        v = self._default if self.value is unset else self.value
        return v if type(v) in immutable else deepcopy(v)

    setattr(fast_current, _MARK, True)
    fast_current.__wrapped_original__ = current  # type: ignore[attr-defined]
    optmanager._Option.current = fast_current  # type: ignore[method-assign]


def listen_with_reuse_port(on_listening: Callable[[], None] | None = None) -> None:
    """Every TCP server mitmproxy starts in this process binds with SO_REUSEPORT, so
    several processes can listen on one port and the kernel spreads connections over
    them (`rr run --workers N`). mitmproxy 12 listens with
    `asyncio.start_server(self.handle_stream, host, port)` in
    `AsyncioServerInstance.listen`; that module gets an `asyncio` whose
    `start_server` adds `reuse_port=True`. `on_listening` runs after the first one."""
    import asyncio

    from mitmproxy.proxy import mode_servers

    _fail_on(_listen_shape())
    pending = [on_listening] if on_listening is not None else []

    class _ReusePort:
        def __getattr__(self, name: str) -> Any:
            return getattr(asyncio, name)

        @staticmethod
        async def start_server(*args: Any, **kwargs: Any) -> asyncio.Server:
            server = await asyncio.start_server(*args, reuse_port=True, **kwargs)
            while pending:
                pending.pop()()
            return server

    mode_servers.asyncio = _ReusePort()  # type: ignore[assignment]


def route_option_changes(master: Any, receiver: Callable) -> None:
    """Put `receiver` where the addon manager's receiver of option changes was, so it
    runs first (dormant addons wake before the chain is configured) and every other
    receiver (mitmweb's option broadcast) keeps its place."""
    from mitmproxy.utils.signals import make_weak_ref

    _fail_on(_receivers_shape())
    changed = master.options.changed
    original = master.addons._configure_all
    for i, ref in enumerate(changed.receivers):
        if ref() == original:
            changed.receivers[i] = make_weak_ref(receiver)
            return
    raise RuntimeError("rr cannot route option changes on this mitmproxy (AddonManager._configure_all not connected)")
