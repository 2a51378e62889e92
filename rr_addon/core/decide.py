"""decide(): request facts in, an Outcome out. No I/O, no clock of its own.

Two steps, so the glue can decide before reading a body when no rule needs it:
- `admit`: authenticate the caller, map the host to a target of its proxy,
  canonicalise the path. Returns a deny Outcome or an `Admission`.
- `authorize`: the access rules of the four scopes — proxy, target, proxy
  credential, target credential — every one of which must allow. A scope whose
  approve rule matched allows only with a person's consent: when no scope
  denies (by a rule or by its default), no token narrowing and no body check
  refuses, the request is held (a `Decision` with result "approve"; the glue
  waits for the person, docs/approvals.md).
`decide` runs both; `explain` runs the same code and keeps every rule's trace.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import parse_qsl

from rr_addon.core import reasons
from rr_addon.core import ambiguity
from rr_addon.core.addresses import names_other_host, sni_names_other_host
from rr_addon.policy.bodies import JsonNumber, reject_constant
from rr_addon.core.callers import ALWAYS_STRIPPED, Presented, Problem, candidate_headers, find_presented, parse_value
from rr_addon.core.digests import basic_digest, same, token_digest
from rr_addon.core import tokens
from rr_addon.policy.paths import CanonicalPath, PathError, canonicalize
from rr_addon.core.responses import EMPTY, Pipeline
from rr_addon.core.rules import RuleRequest, ScopeResult, ScopeRules, ScopeTrace
from rr_addon.policy.validation import RequestBody, Violation, validate
from rr_addon.core.snapshot import (
    PROXY,
    TARGET,
    TOKEN,
    Binding,
    Caller,
    Snapshot,
    Target,
    TargetCredential,
)
from rr_addon.core.types import Decision, Hold, Identity, Outcome, RequestFacts, Route

DEFAULT_INSPECT_LIMIT = 1024 * 1024
_CONTROL = re.compile(r"[\x00\r\n]")


@dataclass(frozen=True, slots=True)
class Limits:
    inspect_bytes: int = DEFAULT_INSPECT_LIMIT  # largest request body body-rules read; larger is 413


@dataclass(frozen=True, slots=True)
class Admission:
    """A caller admitted to a target; the rules are still to run."""

    caller: Caller
    identity: Identity
    target: Target
    credential: TargetCredential | None
    path: CanonicalPath
    strip_headers: frozenset[str]
    report_only: bool
    scopes: tuple[ScopeRules, ...] = field(default=())
    meters_need_body: bool = False
    pipeline: Pipeline = EMPTY
    reads_form: bool = False  # a form body: read for a `_method` override (ambiguity.reads_form)
    token: tokens.Token | None = None  # a minted token's narrowing, checked after the parent's rules

    @property
    def route(self) -> Route:
        return Route(self.target.name, self.credential.name if self.credential else None)

    @property
    def needs_body(self) -> bool:
        p = self.pipeline
        return (
            self.meters_need_body or self.reads_form or bool(p.checks) or p.request_redactor is not None or any(s.needs_body for s in self.scopes)
        )

    @property
    def over_limit_reason(self) -> str:
        """Why a body over the inspection limit is refused (413): the form check alone, request redaction
        (the body can never leave unredacted), or body rules."""
        p = self.pipeline
        alone = not (self.meters_need_body or p.checks or p.request_redactor is not None or self.rules_need_body)
        if self.reads_form and alone:
            return reasons.FORM_OVER_INSPECTION_LIMIT
        return reasons.BODY_OVER_REDACTION_LIMIT if p.request_redactor is not None else reasons.BODY_OVER_INSPECTION_LIMIT

    @property
    def rules_need_body(self) -> bool:
        return any(s.needs_body for s in self.scopes)

    def outcome(self, decision: Decision) -> Outcome:
        # report mode trials the access rules: their denials and holds are recorded, not enforced
        trial = decision.code == "access-denied" or decision.held
        return Outcome(decision, self.identity, self.route, self.strip_headers, report_only=self.report_only and trial)


# ---------------------------------------------------------------------------- authentication


def authenticate(snap: Snapshot, facts: RequestFacts, now: float) -> tuple[Caller | None, Outcome | None, Presented | None]:
    """The caller, or a 401 Outcome. Third value: what was presented (for stripping)."""
    extra = snap.caller_headers_for(facts.host, facts.port, facts.scheme)
    found = find_presented(facts, extra)
    if found is None or isinstance(found, Problem):
        reason = reasons.NO_CREDENTIAL if found is None else found.reason
        return None, Outcome(Decision.deny("unauthenticated", reason), strip_headers=candidate_headers(extra), missing_credential=found is None), None
    unmatched = None
    if tokens.looks_like(found.secret):
        caller, problem = minted_parent(snap, found.secret, now)
    else:
        caller = lookup_caller(snap, found)
        problem = reasons.UNKNOWN_CREDENTIAL if caller is None else unusable(snap, caller, now)
        unmatched = found if caller is None else None
    if problem is not None:
        return None, Outcome(Decision.deny("unauthenticated", problem), strip_headers=candidate_headers(extra), unmatched=unmatched), found
    return caller, None, found


def unusable(snap: Snapshot, caller: Caller, now: float) -> str | None:
    """Why a known credential may not be used now, or None."""
    if not caller.active:
        return reasons.INACTIVE_CREDENTIAL
    if caller.expires_at is not None and now >= caller.expires_at:
        return reasons.EXPIRED_CREDENTIAL
    if not snap.proxies[caller.proxy].active:
        return reasons.INACTIVE_PROXY
    return None


def minted_parent(snap: Snapshot, secret: str, now: float) -> tuple[Caller | None, str | None]:
    """The parent credential of a minted token, or why the token is refused."""
    token = tokens.decode(secret, snap.hmac_key)
    if isinstance(token, str):
        return None, token
    if token.id in snap.revoked_tokens:
        return None, reasons.TOKEN_REVOKED
    if now >= token.expires_at:
        return None, reasons.TOKEN_EXPIRED
    proxy = snap.proxies.get(token.proxy)
    caller = proxy.callers.get(token.credential) if proxy is not None else None
    if caller is None:
        return None, reasons.TOKEN_PARENT_GONE
    if (caller.digest is None) != (token.claims is not None):
        # a verifier's (jwt_verify, oauth2) child carries the claims verified at minting; one without
        # would skip that verification and the claims rules (and a static key's child has no claims)
        return None, reasons.TOKEN_PARENT_VERIFIES
    if not tokens.same_generation(token, caller.generation):
        return None, reasons.TOKEN_PARENT_CHANGED
    return caller, unusable(snap, caller, now)


def presented_token(snap: Snapshot, presented: Presented) -> tokens.Token | None:
    """The minted token an admitted caller presented, if it was one."""
    if not tokens.looks_like(presented.secret):
        return None
    token = tokens.decode(presented.secret, snap.hmac_key)
    return token if isinstance(token, tokens.Token) else None


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


def credential_headers(snap: Snapshot, facts: RequestFacts, presented: Presented) -> frozenset[str]:
    """The headers to remove from an admitted request: rr's own, the one the
    credential came from, and every other candidate header whose value is an rr
    credential too (a caller authenticated on the tunnel may also send its key
    in `Authorization`, which a target injecting elsewhere would forward)."""
    strip = set(ALWAYS_STRIPPED)
    if presented.header:
        strip.add(presented.header)
    for header in candidate_headers(snap.caller_headers_for(facts.host, facts.port, facts.scheme)) - strip:
        for value in facts.header_values(header):
            found = parse_value(header, value)
            if found is not None and (lookup_caller(snap, found) is not None or presented_token(snap, found) is not None):
                strip.add(header)
                break
    return frozenset(strip)


# ---------------------------------------------------------------------------- admission


def route(snap: Snapshot, caller: Caller, facts: RequestFacts) -> tuple[Binding | None, Decision | None]:
    proxy = snap.proxies[caller.proxy]
    binding = proxy.routes.lookup(facts.host, facts.port, facts.scheme)
    hostport = f"{facts.host}:{facts.port}"
    if binding is None:
        secure = proxy.routes.lookup(facts.host, 443, "https") if facts.scheme == "http" else None
        if secure is not None and "https" in secure.target.schemes:
            detail = f"http://{hostport}; use https://{facts.host} (target {secure.target.name} accepts https only)"
        else:
            detail = f"{hostport}; check the URL, or add the host to a target of proxy {caller.proxy}"
        return None, Decision.deny("unknown-target", reasons.UNKNOWN_TARGET, scope=PROXY, detail=detail)
    if facts.scheme not in binding.target.schemes:
        allowed = " or ".join(sorted(binding.target.schemes))
        hint = f"use https://{facts.host}" if "https" in binding.target.schemes else f"use {allowed}"
        detail = f"{facts.scheme}://{hostport}; {hint} (target {binding.target.name} accepts {allowed} only)"
        return None, Decision.deny("unknown-target", reasons.SCHEME_NOT_ALLOWED, scope=TARGET, detail=detail)
    return binding, None


def admit_caller(
    snap: Snapshot, caller: Caller, identity: Identity, facts: RequestFacts, strip: frozenset[str], token: tokens.Token | None = None
) -> Admission | Outcome:
    """Everything after authentication; `rr explain` enters here with a chosen caller."""
    binding, refusal = route(snap, caller, facts)
    if refusal is not None:
        # Report mode trials access rules; authentication and target mapping always enforce.
        return Outcome(refusal, identity, None, strip)
    assert binding is not None
    target = binding.target
    cred_name = caller.target_credentials.get(target.name, binding.credential)
    cred = target.credentials.get(cred_name) if cred_name is not None else None
    proxy = snap.proxies[caller.proxy]
    try:
        path = canonicalize(facts.path, encoded_slashes=target.allow_encoded_slashes)
    except PathError as e:
        hint = reasons.ENCODED_SLASH_HINT if e.reason == reasons.PATH_ENCODED_SEPARATOR and "%2f" in facts.path.lower() else None
        return Outcome(Decision.deny("invalid-request", e.reason, detail=hint), identity, Route(target.name, cred_name), strip)
    wrong_host = other_host(facts)
    if wrong_host is not None:
        # the secret goes to the target host only: a shared front end routes by these names
        return Outcome(Decision.deny("invalid-request", wrong_host), identity, Route(target.name, cred_name), strip)
    if _CONTROL.search("\t".join(v for _, v in facts.headers)):
        # CR/LF/NUL in a value (obs-fold included) could split headers at a lenient upstream
        return Outcome(Decision.deny("invalid-request", reasons.HEADER_CONTROL_CHARACTER), identity, Route(target.name, cred_name), strip)
    if (ambiguous := ambiguity.refusal(facts, path, target.allow_path_parameters)) is not None:
        return Outcome(Decision.deny("invalid-request", ambiguous), identity, Route(target.name, cred_name), strip)
    scopes = (proxy.rules, target.rules, caller.rules) + ((cred.rules,) if cred is not None else ())
    pipeline = snap.pipeline(caller, target, cred)
    report = proxy.mode == "report"
    return Admission(caller, identity, target, cred, path, strip, report, scopes, proxy.meters_need_body, pipeline, ambiguity.reads_form(facts), token)


def other_host(facts: RequestFacts) -> str | None:
    """Why the request names a host other than the one it is routed to (the
    CONNECT host, or a plain-HTTP request's URL host), or None. rr forwards
    these names unchanged, so they must agree with what was decided."""
    hosts = facts.header_values("host")
    if len(hosts) > 1:
        return reasons.HOST_HEADER_REPEATED
    if hosts and names_other_host(hosts[0], facts.host, facts.port):
        return reasons.HOST_HEADER_OTHER_HOST
    if facts.authority and names_other_host(facts.authority, facts.host, facts.port):
        return reasons.AUTHORITY_OTHER_HOST
    if facts.sni is not None and sni_names_other_host(facts.sni, facts.host):
        return reasons.SNI_OTHER_HOST
    return None


def admit_verified(
    snap: Snapshot, caller: Caller, presented: Presented, facts: RequestFacts, now: float, claims: Mapping[str, object]
) -> Admission | Outcome:
    """A caller whose token a verifier accepted (rr_addon.identity.service): the same checks and admission."""
    problem = unusable(snap, caller, now)
    if problem is not None:
        extra = snap.caller_headers_for(facts.host, facts.port, facts.scheme)
        return Outcome(Decision.deny("unauthenticated", problem), strip_headers=candidate_headers(extra))
    identity = Identity(caller.proxy, caller.name, caller.auth, presented.channel, claims)
    return admit_caller(snap, caller, identity, facts, credential_headers(snap, facts, presented))


def admit(snap: Snapshot, facts: RequestFacts, now: float) -> Admission | Outcome:
    caller, denied, presented = authenticate(snap, facts, now)
    if denied is not None:
        return denied
    assert caller is not None and presented is not None
    token = presented_token(snap, presented)
    claims = token.claims if token is not None else None  # a verified caller's child: its claims rules see what they saw
    identity = Identity(caller.proxy, caller.name, caller.auth, presented.channel, claims, token=token.id if token else None)
    return admit_caller(snap, caller, identity, facts, credential_headers(snap, facts, presented), token)


# ---------------------------------------------------------------------------- rules


def too_large(admission: Admission, size: int | None, limits: Limits) -> Outcome | None:
    """413 when rr must read the body and it is over the inspection limit."""
    if admission.needs_body and size is not None and size > limits.inspect_bytes:
        return admission.outcome(
            Decision.deny("payload-too-large", admission.over_limit_reason, detail=f"{size} > {limits.inspect_bytes} bytes")
        )
    return None


def rule_request(admission: Admission, facts: RequestFacts, claims: Mapping[str, object] | None = None) -> RuleRequest | Decision:
    """What the rules see. A Decision (400) when body rules apply and the body claims JSON but is not.

    Upstreams often parse JSON whatever the content type says, so a body is read
    as JSON unless it is declared a form; one that does not parse is opaque
    (`RuleRequest.body_opaque`: it satisfies no allow rule's json_path). A form
    body that also parses as a JSON object or array is refused: rules would see
    form fields, a content-type-blind upstream the JSON. So is a JSON object that
    repeats a key, or has keys that differ only in case: parsers disagree on which
    occurrence wins, and some match keys case-insensitively."""
    headers: dict[str, tuple[str, ...]] = {}
    for k, v in facts.headers:
        headers[k] = headers.get(k, ()) + (v,)
    query = tuple(parse_qsl(admission.path.query, keep_blank_values=True)) if admission.path.query else ()
    body_json = body_form = body_text = None
    opaque = False
    if (admission.rules_need_body or admission.meters_need_body) and facts.body:
        ctype = (headers.get("content-type") or ("",))[0].split(";")[0].strip().lower()
        body_text = facts.body.decode("utf-8", "surrogateescape")
        try:
            body_json = _RULE_JSON.decode(_text(facts.body))
        except _RepeatedKey as e:
            return Decision.deny("invalid-request", e.reason)
        except (ValueError, RecursionError):
            if ctype == "application/json" or ctype.endswith("+json"):
                return Decision.deny("invalid-request", reasons.BODY_NOT_JSON)
            opaque = ctype != "application/x-www-form-urlencoded"
        if ctype == "application/x-www-form-urlencoded":
            if isinstance(body_json, (dict, list)):
                return Decision.deny("invalid-request", reasons.BODY_FORM_AND_JSON)
            body_json = None
            body_form = tuple(parse_qsl(body_text, keep_blank_values=True))
    if claims is None:
        claims = admission.identity.claims
    return RuleRequest(facts.method, admission.path.path, headers, query, body_json, body_form, body_text, claims, opaque)


class _RepeatedKey(ValueError):
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """An object's keys must differ, and not only in case: Go's encoding/json (and
    Jackson with ACCEPT_CASE_INSENSITIVE_PROPERTIES, System.Text.Json's default
    web options) give `{"stream": false, "Stream": true}` the last value. Go folds
    Unicode simple case; `str.casefold()` equates all that and a little more
    (`ß` and `ss`), which errs toward refusing."""
    doc = dict(pairs)
    if len(doc) != len(pairs):
        raise _RepeatedKey(reasons.BODY_JSON_REPEATED_KEY)
    # one set over the keys (most objects are small; one key cannot collide)
    if len(doc) > 1 and len({k.casefold() for k in doc}) != len(doc):
        raise _RepeatedKey(reasons.BODY_JSON_KEYS_DIFFER_IN_CASE)
    return doc


# Numbers as the filters, meters and validation read them (rr_addon.policy.bodies):
# exact, so a rule's `[?(@.n == 1)]` does not match 1.0000000000000001; NaN and
# Infinity are not JSON. Built once: json.loads with keywords builds a scanner per call.
_RULE_JSON = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_float=JsonNumber, parse_constant=reject_constant)


def _text(body: bytes) -> str:
    # json.loads(bytes) would also accept UTF-16/32 (detected from the first bytes); keep that.
    return body.decode(json.detect_encoding(body), "surrogatepass")


def authorize(admission: Admission, facts: RequestFacts, limits: Limits = Limits()) -> tuple[Outcome, RuleRequest | None]:
    """The rules' outcome, and the RuleRequest they saw (meters' `when` reuses it)."""
    if (big := too_large(admission, len(facts.body) if facts.body is not None else None, limits)) is not None:
        return big, None
    if admission.reads_form and facts.body and (override := ambiguity.form_refusal(facts.body)) is not None:
        return admission.outcome(Decision.deny("invalid-request", override)), None
    req = rule_request(admission, facts)
    if isinstance(req, Decision):
        return admission.outcome(req), None
    would_deny = None
    holds: list[tuple[str, ScopeResult]] = []
    for scope in admission.scopes:
        result = scope.evaluate(req)
        if result.held:
            holds.append((scope.scope, result))  # a deny in a later scope still wins
        elif not result.allowed:
            denied = admission.outcome(Decision.deny("access-denied", result.reason, scope=scope.scope, rule=result.rule))
            if not denied.report_only:
                return denied, req
            # report mode trials the access rules only: a token's narrowing and validation still enforce
            would_deny = denied
            break
    if admission.token is not None:
        # the parent allowed it; the token only narrows (never subject to report mode)
        refusal = admission.token.refusal(admission.target.name, facts.method, admission.path.path)
        if refusal is not None:
            return Outcome(
                Decision.deny("access-denied", refusal, scope=TOKEN, rule=admission.token.id), admission.identity, admission.route, admission.strip_headers
            ), req
    if admission.pipeline.checks:
        ctype = (req.headers.get("content-type") or (None,))[0]
        violation = validate(admission.pipeline.checks, RequestBody(facts.method, admission.path.path, ctype, None, facts.body or b""))
        if violation is not None:
            return admission.outcome(violation_decision(violation)), req
    if would_deny is not None:
        return would_deny, req
    if holds:
        return admission.outcome(held(holds)), req
    return admission.outcome(Decision.allow(reasons.ALLOWED)), req


def held(holds: list[tuple[str, ScopeResult]]) -> Decision:
    """The hold of the approve rules that matched: the first scope's rule is named; the
    shortest timeout applies; every distinct notify URL is told."""
    scope, first = holds[0]
    timeout = min(r.approval.timeout for _, r in holds if r.approval is not None)
    urls = tuple(dict.fromkeys(r.approval.notify.url for _, r in holds if r.approval is not None and r.approval.notify is not None))
    assert first.rule is not None
    return Decision.approve(reasons.HELD_FOR_APPROVAL, Hold(timeout, urls), scope=scope, rule=first.rule)


def still_allowed(snap: Snapshot, admitted: Admission, facts: RequestFacts, now: float, limits: Limits = Limits()) -> Decision | None:
    """A held request was approved, but the configuration changed while it waited: the
    refusal the current configuration gives it (its credential gone, inactive or expired,
    its target unbound, a rule now denying), or None. A hold again is no refusal: a person
    approved it. Claims are the ones verified when it arrived."""
    proxy = snap.proxies.get(admitted.caller.proxy)
    caller = proxy.callers.get(admitted.caller.name) if proxy is not None else None
    if caller is None:
        return Decision.deny("unauthenticated", reasons.UNKNOWN_CREDENTIAL)
    if (problem := unusable(snap, caller, now)) is not None:
        return Decision.deny("unauthenticated", problem)
    again = admit_caller(snap, caller, admitted.identity, facts, admitted.strip_headers, admitted.token)
    outcome = again if isinstance(again, Outcome) else authorize(again, facts, limits)[0]
    d = outcome.decision
    return None if d.allowed or d.held or outcome.report_only else d


def violation_decision(violation: Violation, scope: str | None = None) -> Decision:
    """A body that breaks a `validate:` entry, refused with the violation's code and reason."""
    return Decision.deny(violation.code, violation.reason, scope=scope, detail=violation.detail)


def decide(snap: Snapshot, facts: RequestFacts, now: float, limits: Limits = Limits()) -> Outcome:
    """Authentication, target and rules (meters need counters: the glue runs them)."""
    admitted = admit(snap, facts, now)
    if isinstance(admitted, Outcome):
        return admitted
    return authorize(admitted, facts, limits)[0]


def quota_outcome(admission: Admission, verdict) -> Outcome:
    """A refused meter verdict (rr_addon.core.quota.Verdict) as an Outcome: 429, or 403 unknown-model.
    A minted token's used-up budget is named first: no retry will ever pass it."""
    if admission.token is not None and tokens.budget_used_up(verdict):
        token = admission.token
        decision = Decision.deny("quota-exceeded", reasons.TOKEN_REQUESTS_USED, scope=TOKEN, rule=token.id, detail=f"{token.max_requests} of {token.max_requests}")
        return Outcome(decision, admission.identity, admission.route, admission.strip_headers)
    meter, window = verdict.exhausted[0] if verdict.exhausted else (None, None)
    detail = verdict.detail or (f"{window} window" if window else None)
    return Outcome(
        Decision.deny(verdict.code, verdict.reason, scope="meter" if meter else None, rule=meter or None, detail=detail),
        admission.identity,
        admission.route,
        admission.strip_headers,
    )


def quota_headers(verdict) -> tuple[tuple[str, str], ...]:
    """The headers of a refused meter verdict: Retry-After until the earliest
    exhausted window resets, RateLimit headers; no Retry-After for an unknown
    model, none of them for a token's used-up budget (it never resets: the
    token expires first)."""
    if tokens.budget_used_up(verdict):
        return ()
    extra = (("retry-after", str(verdict.retry_after)),) if verdict.retry_after else ()  # none for unknown-model
    if verdict.policy:
        extra += (("ratelimit-policy", verdict.policy), ("ratelimit", verdict.ratelimit or ""))
    return extra


# ---------------------------------------------------------------------------- explanation


@dataclass(frozen=True)
class Explanation:
    outcome: Outcome
    steps: tuple[tuple[str, str], ...]  # (step, what happened) before the rules
    scopes: tuple[ScopeTrace, ...] = ()


def explain(
    snap: Snapshot,
    caller: Caller,
    facts: RequestFacts,
    limits: Limits = Limits(),
    claims: Mapping[str, object] | None = None,
    token: tokens.Token | None = None,
) -> Explanation:
    """The decision for `facts` as `caller` (with verified `claims`, if any), with every scope's rule trace.
    `token`: a minted token of `caller` (as `minted_parent` accepted it), whose narrowing is applied and shown."""
    if token is not None:
        claims = token.claims
    identity = Identity(caller.proxy, caller.name, caller.auth, "explain", claims, token.id if token else None)
    steps = [("caller", f"{caller.proxy}/{caller.name} ({caller.auth})")]
    if token is not None:
        steps.append(("token", describe(token)))
    if caller.digest is None:
        steps.append(("claims", ", ".join(f"{k}={v}" for k, v in claims.items()) if claims else "none given: claims rules do not match"))
    admitted = admit_caller(snap, caller, identity, facts, ALWAYS_STRIPPED, token)
    if isinstance(admitted, Outcome):
        steps.append(("refused", admitted.decision.reason))
        return Explanation(admitted, tuple(steps))
    steps.append(("target", f"{admitted.target.name} via {admitted.credential.name if admitted.credential else 'no credential'}"))
    steps.append(("path", admitted.path.target))
    outcome, req = authorize(admitted, facts, limits)
    if token is not None and req is not None:
        refusal = token.refusal(admitted.target.name, facts.method, admitted.path.path)
        steps.append(("token narrowing", refusal or "inside it (target, method and path allowed)"))
    traces = tuple(s.explain(req) for s in admitted.scopes) if req is not None else ()
    return Explanation(outcome, tuple(steps), traces)


def describe(token: tokens.Token) -> str:
    """A minted token's narrowing in one line (never the token itself)."""
    parts = [token.id, f"subject {token.subject}" if token.subject else "",
             "targets " + ", ".join(token.targets) if token.targets else "every target of the parent",
             "allow " + ", ".join(f"{a.method} {a.path}" for a in token.allow) if token.allow else "every method and path",
             f"max requests {token.max_requests}" if token.max_requests is not None else ""]
    return "; ".join(p for p in parts if p)
