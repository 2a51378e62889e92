"""The request pipeline: admit → verify → body → authorize → meters → upstream token.

One request's decision, from `RequestFacts` to one `Verdict`, with no mitmproxy
in sight: the hooks (`rr_addon.mitm.requests`), `rr explain --token` and tests
run the same code. The pure steps are `rr_addon.core.decide`; this module adds
the three that await something — a token verifier (JWKS, introspection), the
meter counters, and an upstream OAuth token — and times the decision.

The body arrives after the headers in a proxy, so the pipeline has two halves:
`admit` (authentication, verification, target, path) returns a `Verdict` (a
refusal) or an `Admitted` that says whether the body must be read first;
`authorize` (body, rules, meters, upstream token) finishes it. `run` does both
for a request whose body is already known.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rr_addon.core import decide, mcp, tokens
from rr_addon.core.decide import Admission, Limits, admit_verified, quota_headers, quota_outcome
from rr_addon.core.inject import Injection
from rr_addon.core.quota import Plan, Verdict as MeterVerdict
from rr_addon.core.snapshot import Snapshot
from rr_addon.core.types import Decision, Outcome, RequestFacts

if TYPE_CHECKING:  # the services are passed in: the gate itself opens nothing
    from rr_addon.identity.service import Identities
    from rr_addon.counters.metering import Metering


@dataclass(frozen=True, slots=True)
class Metered:
    """The meters of an admitted request: their plan, and the counters' verdict."""

    plan: Plan
    verdict: MeterVerdict


@dataclass(frozen=True, slots=True)
class Verdict:
    """Everything decided about one request.

    `outcome` is the decision (with identity and route); `admission` what the
    caller was admitted to (None when refused before); `metered` the meters it
    counted in; `injection` the upstream credential to apply on the wire;
    `extra_headers` what a refusal carries (Retry-After, RateLimit);
    `verification` the audit summary of a token verification; `mcp` the JSON-RPC
    method and tool of the body (rr_addon.core.mcp.audit_fields)."""

    outcome: Outcome
    admission: Admission | None = None
    metered: Metered | None = None
    injection: Injection | None = None
    extra_headers: tuple[tuple[str, str], ...] = ()
    verification: Mapping[str, object] | None = None
    mcp: Mapping[str, str] | None = None  # audit fields: the JSON-RPC method and tool of a body the rules read
    seconds: float = 0.0  # spent deciding (authentication, target, rules, meters); awaited verifiers and bodies excluded

    @property
    def forwards(self) -> bool:
        """Whether the request goes upstream (allowed, or refused in report mode only)."""
        return self.outcome.decision.allowed or self.outcome.report_only


@dataclass(frozen=True, slots=True)
class Admitted:
    """A caller admitted to a target; the rules (and maybe the body) are still to come."""

    admission: Admission
    facts: RequestFacts
    verification: Mapping[str, object] | None = None
    seconds: float = 0.0

    @property
    def needs_body(self) -> bool:
        return self.admission.needs_body


class Gate:
    """The services the pipeline awaits; replaced whole when they are reopened."""

    def __init__(self, identities: Identities | None = None, metering: Metering | None = None, limits: Limits = Limits()) -> None:
        self.identities = identities
        self.metering = metering
        self.limits = limits

    async def admit(self, snap: Snapshot, facts: RequestFacts, now: float, *, client: str | None = None) -> Verdict | Admitted:
        """Authenticate (a credential no digest matched goes to the token verifiers), map the target, canonicalise the path."""
        t0 = time.perf_counter()
        admitted = decide.admit(snap, facts, now)
        seconds = time.perf_counter() - t0
        verification = admitted.token.audit() if isinstance(admitted, Admission) and admitted.token is not None else None  # a verified caller's child
        if isinstance(admitted, Outcome) and admitted.unmatched is not None:
            admitted, verification = await self.verify(snap, facts, now, admitted, client)
        if isinstance(admitted, Outcome):
            return Verdict(admitted, verification=verification, seconds=seconds)
        return Admitted(admitted, facts, verification, seconds)

    async def verify(self, snap: Snapshot, facts: RequestFacts, now: float, unknown: Outcome, client: str | None) -> tuple[Admission | Outcome, Mapping | None]:
        """A credential no stored digest matched may be a token a verifier accepts (jwt_verify, oauth2)."""
        from rr_addon.identity import Refused  # the verifiers' result types; loaded with the verifiers

        identities = self.identities
        if identities is None or identities.index is None:
            return unknown, None
        presented = unknown.unmatched
        assert presented is not None
        result = await identities.identify(presented.secret, client=client)
        if isinstance(result, Refused):
            refused = dataclasses.replace(unknown, decision=Decision.deny("unauthenticated", result.reason, detail=result.detail))
            return refused, result.audit()
        caller, verified = result
        return admit_verified(snap, caller, presented, facts, now, verified.claims), verified.audit()

    async def authorize(self, snap: Snapshot, admitted: Admitted, body: bytes | Decision | None = None, hold=None) -> Verdict:
        """The body (a Decision: it could not be read), rules, meters (counted only for
        requests the rules let through), then the upstream token of a dynamic credential.
        A request an approve rule holds is awaited with `hold(outcome, admission, facts)`
        (rr_addon.approvals: the person's decision as an Outcome) before its meters;
        without `hold` its held Verdict is returned (it forwards nothing)."""
        admission, verification, seconds = admitted.admission, admitted.verification, admitted.seconds
        if isinstance(body, Decision):
            return Verdict(admission.outcome(body), admission, verification=verification, seconds=seconds)
        facts = admitted.facts if body is None else admitted.facts.with_body(body)
        t0 = time.perf_counter()
        outcome, req = decide.authorize(admission, facts, self.limits)
        called = mcp.audit_fields(req.body_json) if req is not None and req.body_json is not None else None
        if outcome.decision.held and not outcome.report_only:
            seconds += time.perf_counter() - t0
            if hold is None:
                return Verdict(outcome, admission, verification=verification, mcp=called, seconds=seconds)
            outcome = await hold(outcome, admission, facts)  # meters count only what a person approved
            if not outcome.decision.allowed:
                return Verdict(outcome, admission, verification=verification, mcp=called, seconds=seconds)
            t0 = time.perf_counter()
        forwards = outcome.decision.allowed or outcome.report_only
        metered = None
        if req is not None and forwards:
            assert self.metering is not None
            plan = snap.proxies[admission.identity.proxy].meters.plan(admission.identity.credential, req, time.time())
            plan = tokens.with_budget(plan, admission.token)  # a minted token's --max-requests
            metered = Metered(plan, await self.metering.check(plan, admission.identity.proxy))
        seconds += time.perf_counter() - t0
        if metered is not None and not metered.verdict.admitted:
            v = metered.verdict
            return Verdict(quota_outcome(admission, v), admission, extra_headers=quota_headers(v), verification=verification, mcp=called, seconds=seconds)
        cred = admission.credential
        injection = cred.injection if cred is not None and not cred.injection.dynamic else None
        if cred is not None and cred.injection.dynamic and forwards:
            from rr_addon.identity.upstream_token import UpstreamTokenError

            assert self.identities is not None
            try:
                injection = await self.identities.upstream_injection(cred.target, cred.name)
            except UpstreamTokenError as e:
                if metered is not None and self.metering is not None:
                    await self.metering.add(metered.plan.refund())  # nothing leaves: the quota is not used
                refused = admission.outcome(Decision.deny(e.code, e.reason, detail=e.detail))
                return Verdict(refused, admission, verification=verification, mcp=called, seconds=seconds)
        return Verdict(outcome, admission, metered, injection, verification=verification, mcp=called, seconds=seconds)

    async def run(self, snap: Snapshot, facts: RequestFacts, now: float, *, client: str | None = None) -> Verdict:
        """The whole pipeline for a request whose body (if any) is in `facts`."""
        admitted = await self.admit(snap, facts, now, client=client)
        if isinstance(admitted, Verdict):
            return admitted
        return await self.authorize(snap, admitted)

