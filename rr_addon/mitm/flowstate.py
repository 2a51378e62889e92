"""What rr keeps about one flow between its hooks: one object, one attribute.

Not in `flow.metadata`: mitmproxy serialises the metadata with the flow (`-w`,
mitmweb's flow store), and these values (timers, stamps, plans) are neither
serialisable nor anything a viewer should see. `flow.metadata["rr"]` keeps the
plain record of the decision that viewers do show. A replayed flow is decided
from scratch: `forget` drops the state whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_ATTRIBUTE = "_rr"


@dataclass(slots=True, eq=False)
class FlowState:
    # the request side (rr_addon.mitm.requests)
    started: float | None = None  # time.monotonic() at requestheaders
    decision_seconds: float | None = None  # spent deciding (auth, target, rules, meters), body waits excluded
    pending: Any = None  # gate.Admitted waiting for the body
    seen: Any = None  # wire.Stamp of the request as rr is deciding on it (an edit meanwhile refuses it)
    verification: Any = None  # audit summary of a token verification (subject, issuer, path)
    mcp: Any = None  # audit fields naming the JSON-RPC method and tool of a body the rules read
    approval: Any = None  # a held request: {rule, state, by, at, note} (rr_addon.approvals)
    metered: Any = None  # gate.Metered of an admitted request
    pipeline: Any = None  # the response Pipeline of an admitted request
    watch: Any = None  # the timeouts.Watch of an admitted request
    # the response side (rr_addon.mitm.responses)
    timed_out: str | None = None  # which timeout cut the exchange off
    held_for: str | None = None  # why a response is held back whole (the reason if it is too large)
    unscrubbable: Any = None  # the Decision refusing a response rr cannot scrub (its body is never read)
    audited: bool = False
    settled: bool = False  # the response_value/cost meters were settled (or the reservation released)
    # the wire seam (rr_addon.mitm.wire)
    refusal: tuple[str, str] | None = None  # (code, reason) of a refusal below the hooks
    whole: tuple[int, str] | None = None  # rr decides on the whole body, read up to (this many bytes, 413 reason)
    error_answer: Any = None  # the http.Response to send instead of a protocol error
    deferred: bool = False  # send the response whole, at its end
    guard: Any = None  # True, the held ResponseHeaders event, or wire's SENT
    cut: bool = False  # its streamed body cannot be passed on any further
    client_left: bool = False  # the client reset its stream (seen below the hooks: wire.route)
    hold_wake: Any = None  # the asyncio.Event a request held for approval waits on
    private_ok: bool = False  # its target allows private addresses (a reused connection is checked against it)


def of(flow: Any) -> FlowState:
    """The flow's state, created on first use."""
    found = flow.__dict__.get(_ATTRIBUTE)
    if found is None:
        found = flow.__dict__[_ATTRIBUTE] = FlowState()
    return found


def peek(flow: Any) -> FlowState | None:
    """The flow's state if rr has any (the wire seam asks for every response event)."""
    return flow.__dict__.get(_ATTRIBUTE)


def forget(flow: Any) -> None:
    """A replayed flow is a new request: nothing rr decided or planned for it before holds."""
    found = flow.__dict__.pop(_ATTRIBUTE, None)
    if found is not None and found.watch is not None:
        found.watch.cancel()
