"""Holding a request until a person decides (docs/approvals.md).

The policy core decides that a request needs a person (a Decision with
result "approve"); this module does the waiting, inside the `request` hook,
with the whole body in and nothing forwarded:

- it records a pending row in the configuration database, or a hybrid data
  plane's control plane (the ledger: rr_addon.store.approvals.DatabaseLedger,
  rr_addon.hybrid.approvals.RemoteLedger; a request rr could not record is
  refused: 503 approval-unavailable), notifies the rule's
  webhook, and intercepts the flow the mitmproxy way, so mitmweb shows it as
  intercepted with rr's comment — resume is approve, kill is deny;
- it then waits for the first of: a decision in the ledger (`rr approve` /
  `rr deny` from any machine; polled every POLL seconds while anything is
  held, not at all when nothing is), mitmweb's resume or kill, the client
  leaving (withdrawn), the rule's timeout (403 approval-timeout), or rr
  stopping (503 approval-unavailable);
- every way out is one conditional update of the row, so the first decision
  wins and a late one gets what happened instead.

The glue gets back an Outcome: allowed (then meters, injection and the custody
check of rr_addon.wire run as for any allowed request — an edit made while the
request was held refuses it) or a refusal to answer with.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import httpx
from mitmproxy import ctx, hooks, http

from rr_addon.core import reasons
from rr_addon.core.callers import candidate_headers, find_presented, Presented
from rr_addon.core.decide import Admission, still_allowed
from rr_addon.core.preview import body_preview, masked, spellings
from rr_addon.core.types import Decision, Outcome, RequestFacts
from rr_addon.mitm import flowstate
from rr_addon.store import approvals as store

logger = logging.getLogger("rr")

POLL = 0.5  # seconds between database checks while a request is held
TICK = 0.25  # seconds between checks of mitmweb's resume/kill, which set no event rr could await
NOTIFY_TIMEOUT = 5.0  # seconds for the webhook (connect and answer)
MITMWEB = "mitmweb"  # who decided, when the decision came from mitmweb (its users have no names)
STOPPED = "rr stopped"
MARKER = ":writing_hand:"  # ✍ (U+270D): a text symbol common fonts have (see rr_addon.webview), "awaiting a signature"


@dataclass
class _Held:
    flow: http.HTTPFlow
    proxy: str
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closed: store.Closed | None = None  # decided in the database (by the poller) or by shutdown
    client_gone: bool = False


class Approvals:
    """The requests this data plane holds, by request id."""

    def __init__(self) -> None:
        self.held: dict[str, _Held] = {}
        self._poller: asyncio.Task | None = None
        self._ledger = None
        self._tasks: set[asyncio.Task] = set()

    def count(self, proxy: str) -> int:
        return sum(1 for h in self.held.values() if h.proxy == proxy)

    # ------------------------------------------------------------------ the hold

    async def hold_flow(self, rr, flow: http.HTTPFlow, outcome: Outcome, admitted: Admission, facts: RequestFacts, snap) -> Outcome:
        """The gate's `hold` (rr_addon.gate.Gate.authorize): wait for the person, then check an
        approval against a configuration that changed meanwhile."""
        decided = await self.hold(flow, admitted, facts, outcome, rr.services.approval_ledger(), rr.plane_id, ctx.options.rr_max_held_requests)
        if decided.decision.allowed and rr.snapshot is not snap and rr.snapshot is not None:  # reloaded while held
            decided = recheck(flow.id, decided, rr.snapshot, admitted, facts, rr.gate.limits)
        return decided

    async def hold(self, flow: http.HTTPFlow, admitted: Admission, facts: RequestFacts, outcome: Outcome, ledger, plane: str, cap: int) -> Outcome:
        d = outcome.decision
        assert d.held and d.hold is not None and d.scope is not None and d.rule is not None
        ident = admitted.identity

        def refused(code: str, reason: str, detail: str | None = None) -> Outcome:
            return admitted.outcome(Decision.deny(code, reason, scope=d.scope, rule=d.rule, detail=detail))

        if ledger is None:
            return refused("approval-unavailable", reasons.APPROVAL_NOT_RECORDED, "rr runs without a database")
        if cap and self.count(ident.proxy) >= cap:
            _note(flow, store.Closed("refused"), d.rule)
            return refused("approval-capacity", reasons.APPROVAL_CAPACITY, f"{cap} held (rr_max_held_requests)")
        secrets = _secrets(admitted, facts)
        url = _mask(flow.request.url, secrets)
        redactor = admitted.pipeline.request_redactor
        row = {
            "request_id": flow.id,
            "dataplane": plane,
            "proxy": ident.proxy,
            "credential": ident.credential,
            "target": admitted.target.name,
            "target_credential": admitted.credential.name if admitted.credential else None,
            "method": flow.request.method,
            "url": url,
            "scope": d.scope,
            "rule": d.rule,
            "body_preview": body_preview(facts.body, secrets, redactor),
        }
        held = self.held[flow.id] = _Held(flow, ident.proxy)  # the slot is taken before any await: the cap is hard
        failed: Exception | None = None
        try:
            await asyncio.to_thread(ledger.record, row, d.hold.timeout)
        except Exception as e:
            failed = e
        if held.closed is not None:
            # rr began stopping while the row was written (that may be why writing failed: the
            # ledger's connections close); the row, if written, was not among those abandoned
            self.held.pop(flow.id, None)
            closed = await self._close(ledger, flow.id, store.ABANDONED, None, STOPPED, local=True)
            _note(flow, closed, d.rule)
            return refused("approval-unavailable", reasons.APPROVAL_INTERRUPTED)
        if failed is not None:
            self.held.pop(flow.id, None)
            self._spawn(_forget(ledger, flow.id))
            logger.error("rr cannot hold request %s for approval: %s did not record the pending row (%s)", flow.id, ledger.where, _first_line(failed))
            return refused("approval-unavailable", reasons.APPROVAL_NOT_RECORDED, ledger.unavailable)
        self._ledger = ledger
        try:
            self._intercept(flow, row, d.hold.timeout, held.wake)
            for hook in d.hold.notify:
                self._spawn(_notify(hook, row, d.hold.timeout))
            self._ensure_poller()
            closed = await self._wait(held, ledger, time.monotonic() + d.hold.timeout)
        finally:
            self.held.pop(flow.id, None)
            _release(flow)
        _note(flow, closed, d.rule)
        logger.info("rr: request %s held by rule %s: %s%s", flow.id, d.rule, closed.state, f" by {closed.by}" if closed.by else "")
        if closed.state == store.APPROVED:
            return admitted.outcome(Decision.allow(reasons.APPROVED, scope=d.scope, rule=d.rule))
        if closed.state == store.DENIED:
            return refused("access-denied", reasons.DENIED_BY_APPROVER)
        if closed.state == store.TIMED_OUT:
            return refused("approval-timeout", reasons.APPROVAL_TIMEOUT, f"waited {d.hold.timeout} s")
        if closed.state == store.WITHDRAWN:
            return refused("approval-withdrawn", reasons.APPROVAL_WITHDRAWN)
        if closed.note == STOPPED:
            return refused("approval-unavailable", reasons.APPROVAL_INTERRUPTED)
        return refused("approval-unavailable", reasons.APPROVAL_NOT_RECORDED, closed.note)

    async def _wait(self, held: _Held, ledger, deadline: float) -> store.Closed:
        flow = held.flow
        while True:
            if held.closed is not None:  # decided in the database, or rr is stopping
                if _killed(flow):  # a kill in mitmweb is a denial here, whatever the database says
                    return store.Closed(store.DENIED, MITMWEB, note=f"killed in mitmweb (the database had {held.closed.state})")
                return held.closed
            if _killed(flow):
                return await self._close(ledger, flow.id, store.DENIED, MITMWEB, "killed in mitmweb", local=True)
            if not flow.intercepted:  # resumed in mitmweb (or by another addon): an approval
                return await self._close(ledger, flow.id, store.APPROVED, MITMWEB, "resumed in mitmweb")
            if held.client_gone or flow.client_conn.timestamp_end is not None:
                return await self._close(ledger, flow.id, store.WITHDRAWN, None, "the client closed the connection", local=True)
            if flowstate.of(flow).client_left:
                return await self._close(ledger, flow.id, store.WITHDRAWN, None, "the client reset its stream", local=True)
            left = deadline - time.monotonic()
            if left <= 0:
                return await self._close(ledger, flow.id, store.TIMED_OUT, None, None, local=True)
            held.wake.clear()
            try:
                await asyncio.wait_for(held.wake.wait(), min(TICK, left))
            except TimeoutError:
                pass

    async def _close(self, ledger, request_id: str, state: str, by: str | None, note: str | None, *, local: bool = False) -> store.Closed:
        """Record how the hold ended; if the ledger already had a decision, that one stands.
        `local`: an ending that refuses (kill, time-out, withdrawal) also stands without the ledger."""
        try:
            closed = await asyncio.to_thread(ledger.close, request_id, state, by, note)
        except Exception as e:
            logger.error("rr: could not record that request %s was %s (%s)", request_id, state, _first_line(e))
            if local:
                return store.Closed(state, by, datetime.now(timezone.utc), note)
            # an approval that cannot be recorded could overrule a denial rr cannot see: refuse
            return store.Closed(store.ABANDONED, None, datetime.now(timezone.utc), "the approval could not be recorded in the database")
        if local and closed.state != state and state == store.DENIED:
            return store.Closed(state, by, closed.at, note)  # a kill refuses, even after an approval elsewhere
        return closed

    def _intercept(self, flow: http.HTTPFlow, row: dict, timeout: int, wake: asyncio.Event) -> None:
        flow.intercept()
        flowstate.of(flow).hold_wake = wake  # a stream reset by the client wakes the wait at once
        if flow._resume_event is None:
            flow._resume_event = wake  # mitmweb's resume wakes the wait at once (a kill sets nothing: see TICK)
        meta = flow.metadata.setdefault("rr", {})
        meta.update(result="held", scope=row["scope"], rule=row["rule"], proxy=row["proxy"], credential=row["credential"],
                    target=row["target"], target_credential=row["target_credential"])
        flow.marked = MARKER
        flow.comment = (
            f"rr held for approval · {row['proxy']}/{row['credential']} → {row['target']} · {row['scope']} rule {row['rule']} · "
            f"resume = approve, kill = deny · rr approve {flow.id} (times out in {timeout} s)"
        )
        ctx.master.addons.trigger(hooks.UpdateHook([flow]))  # mitmweb shows it intercepted now, not when the hook returns

    # ------------------------------------------------------------------ polling and events

    def _ensure_poller(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        """Ask the database about the held requests every POLL seconds; stop when none is held."""
        while self.held:
            await asyncio.sleep(POLL)
            ids = [i for i, h in self.held.items() if h.closed is None]
            if not ids or self._ledger is None:
                continue
            try:
                found = await asyncio.to_thread(self._ledger.decisions, ids)
            except Exception as e:  # the next poll retries; time-outs still apply
                logger.warning("rr: cannot read approval decisions (%s)", _first_line(e))
                continue
            for request_id, closed in found.items():
                held = self.held.get(request_id)
                if held is not None and held.closed is None:
                    held.closed = closed
                    held.wake.set()

    def client_gone(self, client_id: str) -> None:
        for held in self.held.values():
            if held.flow.client_conn.id == client_id:
                held.client_gone = True
                held.wake.set()

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """rr is stopping: every held request is answered 503 and its row abandoned."""
        ids = list(self.held)
        for held in self.held.values():
            held.closed = store.Closed(store.ABANDONED, None, datetime.now(timezone.utc), STOPPED)
            held.wake.set()
        if ids and self._ledger is not None:
            try:
                await asyncio.to_thread(self._ledger.abandon, ids, STOPPED)
            except Exception as e:
                logger.warning("rr: could not mark %d held requests abandoned (%s)", len(ids), _first_line(e))
        if self._poller is not None:
            self._poller.cancel()
        for task in list(self._tasks):
            task.cancel()


async def _forget(ledger, request_id: str) -> None:
    """Recording a hold failed, but it may have been recorded (a control plane whose answer
    was lost): close it, so nobody is shown a request nobody holds any more."""
    try:
        await asyncio.to_thread(ledger.close, request_id, store.ABANDONED, None, "not held: recording it failed")
    except Exception as e:  # it expires with its timeout anyway
        logger.debug("rr: could not close the unrecorded hold %s (%s)", request_id, _first_line(e))


def recheck(request_id: str, approved: Outcome, snap, admitted: Admission, facts: RequestFacts, limits) -> Outcome:
    """An approval does not outlive a configuration change that refuses the request (a
    credential revoked, a rule added while it was held): then that refusal is the answer."""
    refusal = still_allowed(snap, admitted, facts, time.time(), limits)
    if refusal is None:
        return approved
    logger.info("rr: request %s was approved, but configuration version %d refuses it: %s", request_id, snap.version, refusal.reason)
    return dataclasses.replace(approved, decision=refusal, report_only=False)


def _killed(flow: http.HTTPFlow) -> bool:
    return flow.error is not None and flow.error.msg == flow.error.KILLED_MESSAGE


def _release(flow: http.HTTPFlow) -> None:
    """The hold is over: rr answers the flow itself, so a kill becomes rr's 403 instead of a
    dropped connection, and mitmproxy must not wait for a resume any more."""
    if _killed(flow):
        flow.error = None
        flow.live = True
    if flow.intercepted:
        flow.resume()
    if flow.marked == MARKER:
        flow.marked = ""


def _note(flow: http.HTTPFlow, closed: store.Closed, rule: str) -> None:
    """What the audit record says of the hold: who decided, when, why."""
    flowstate.of(flow).approval = {
        "rule": rule,
        "state": closed.state,
        "by": closed.by,
        "at": closed.at.isoformat(timespec="milliseconds") if closed.at else None,
        "note": closed.note,
    }


def _secrets(admitted: Admission, facts: RequestFacts) -> tuple[str, ...]:
    """Every secret the preview and the URL must not show: the caller's credential in every
    header that may carry one, and the target secret rr would inject."""
    out: set[str] = set()
    found = find_presented(facts)
    if isinstance(found, Presented):
        out.add(found.secret)
    for name, value in facts.headers:
        if name in candidate_headers(()):
            out.add(value)
            out.add(value.partition(" ")[2])
    for value in facts.tunnel_authorization:
        out.add(value.partition(" ")[2])
    cred = admitted.credential
    if cred is not None and not cred.injection.dynamic:
        out.update(cred.injection.secrets)
    return tuple(s for s in out if len(s) >= 4)  # shorter strings would mask ordinary text and hide nothing


def _mask(text: str, secrets: tuple[str, ...]) -> str:
    return masked(text, spellings(secrets))  # a key in the query may be percent-encoded in any way


async def _notify(url: str, row: dict, timeout: int) -> None:
    """One JSON POST (Slack-compatible `text`); its failure is logged and approves nothing."""
    text = (
        f"rr: {_slack(row['method'])} {_slack(row['url'])} by {row['proxy']}/{row['credential']} is held for approval "
        f"({row['scope']} rule {row['rule']}; times out in {timeout} s). "
        f"Decide with `rr approve {row['request_id']}` or `rr deny {row['request_id']}`."
    )
    payload = {
        "text": text,
        "request_id": row["request_id"],
        "proxy": row["proxy"],
        "credential": row["credential"],
        "target": row["target"],
        "method": row["method"],
        "url": row["url"],
        "rule": row["rule"],
        "timeout_seconds": timeout,
    }
    try:
        # trust_env=False: never through HTTPS_PROXY (which may point at rr itself), no netrc
        async with httpx.AsyncClient(timeout=NOTIFY_TIMEOUT, follow_redirects=False, trust_env=False) as client:
            resp = await client.post(url, json=payload)
        if resp.status_code >= 300:
            logger.warning("rr: approval webhook for request %s answered %d", row["request_id"], resp.status_code)
    except Exception as e:
        logger.warning("rr: approval webhook for request %s failed: %s", row["request_id"], _first_line(e))


def _slack(text: str) -> str:
    """Caller-chosen text in Slack's markup: `<!channel>` or `<https://…|label>` stays literal."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]
