"""decide(): request facts in, an Outcome out. No I/O, no clock of its own.

Order: authenticate the caller → map the host to one of its proxy's targets →
allow. Each step either returns a deny Outcome with a fixed reason or hands on.
"""

from __future__ import annotations

from rr_addon.core import reasons
from rr_addon.core.callers import ALWAYS_STRIPPED, Presented, Problem, candidate_headers, find_presented
from rr_addon.core.digests import basic_digest, same, token_digest
from rr_addon.core.snapshot import Binding, Caller, Snapshot
from rr_addon.core.types import Decision, Identity, Outcome, RequestFacts, Route


def authenticate(snap: Snapshot, facts: RequestFacts, now: float) -> tuple[Caller | None, Outcome | None, Presented | None]:
    """The caller, or a 401 Outcome. Third value: what was presented (for stripping)."""
    extra = snap.caller_headers_for(facts.host, facts.port, facts.scheme)
    found = find_presented(facts, extra)
    if found is None or isinstance(found, Problem):
        reason = reasons.NO_CREDENTIAL if found is None else found.reason
        return None, Outcome(Decision.deny("unauthenticated", reason), strip_headers=candidate_headers(extra)), None
    caller = lookup_caller(snap, found)
    problem = None
    if caller is None:
        problem = reasons.UNKNOWN_CREDENTIAL
    elif not caller.active:
        problem = reasons.INACTIVE_CREDENTIAL
    elif caller.expires_at is not None and now >= caller.expires_at:
        problem = reasons.EXPIRED_CREDENTIAL
    elif not snap.proxies[caller.proxy].active:
        problem = reasons.INACTIVE_PROXY
    if problem is not None:
        return None, Outcome(Decision.deny("unauthenticated", problem), strip_headers=candidate_headers(extra)), found
    return caller, None, found


def lookup_caller(snap: Snapshot, presented: Presented) -> Caller | None:
    key = snap.hmac_key
    if presented.username is not None:
        digest = basic_digest(key, presented.username, presented.secret)
        caller = snap.by_basic.get(digest)
        if caller is not None and same(caller.digest, digest):
            return caller
    digest = token_digest(key, presented.secret)
    caller = snap.by_token.get(digest)
    if caller is not None and same(caller.digest, digest):
        return caller
    return None


def route(snap: Snapshot, caller: Caller, facts: RequestFacts) -> tuple[Binding | None, Decision | None]:
    proxy = snap.proxies[caller.proxy]
    binding = proxy.routes.lookup(facts.host, facts.port, facts.scheme)
    if binding is None:
        return None, Decision.deny("unknown-target", reasons.UNKNOWN_TARGET, scope="proxy")
    if facts.scheme not in binding.target.schemes:
        return None, Decision.deny("unknown-target", reasons.SCHEME_NOT_ALLOWED, scope="target")
    return binding, None


def decide(snap: Snapshot, facts: RequestFacts, now: float) -> Outcome:
    caller, denied, presented = authenticate(snap, facts, now)
    if denied is not None:
        return denied
    assert caller is not None and presented is not None
    identity = Identity(caller.proxy, caller.name, caller.auth, presented.channel)
    strip = ALWAYS_STRIPPED | ({presented.header} if presented.header else set())
    report = snap.proxies[caller.proxy].mode == "report"

    binding, refusal = route(snap, caller, facts)
    if refusal is not None:
        # Report mode trials access rules; authentication and target mapping always enforce.
        return Outcome(refusal, identity, None, frozenset(strip))
    assert binding is not None
    target = binding.target
    cred_name = caller.target_credentials.get(target.name, binding.credential)
    return Outcome(
        Decision.allow(reasons.ALLOWED),
        identity,
        Route(target.name, cred_name),
        frozenset(strip),
        report_only=report,
    )
