"""Compile a validated configuration into the immutable snapshot the proxy reads.

Everything that can be done once is done here: host patterns indexed,
credential digests put in dicts, injections rendered. The request path only
does dictionary lookups on the result, so its cost does not grow with the
number of targets or credentials. A reload builds a new Snapshot and swaps
one reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Mapping

from rr_addon.policy import schema
from rr_addon.policy.hosts import DEFAULT_PORTS, HostIndex, HostPattern, parse_host_pattern
from rr_addon.core.inject import Injection, build_injection
from rr_addon.policy.filters import Filter, compile_filters
from rr_addon.core.quota import ProxyMeters, compile_meters, meters_read_request_body
from rr_addon.policy.redact import Redactor, compile_redactor
from rr_addon.core.responses import EMPTY, Pipeline
from rr_addon.policy.validation import Check, compile_checks
from rr_addon.core.rules import ScopeRules, compile_when

# Scope names, in the order they are checked and reported.
PROXY, TARGET, PROXY_CREDENTIAL, TARGET_CREDENTIAL = "proxy", "target", "proxy-credential", "target-credential"
TOKEN = "token"  # a minted token's narrowing (rr_addon.core.tokens), checked after the four scopes


@dataclass(frozen=True, slots=True)
class TargetCredential:
    target: str
    name: str
    kind: str
    injection: Injection
    rules: ScopeRules
    filters: tuple[Filter, ...] = ()
    redact: tuple = ()  # RedactEntry models; compiled per combination of scopes


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    schemes: frozenset[str]
    default_effect: str
    allow_private_addresses: bool
    allow_path_parameters: bool
    allow_encoded_slashes: bool
    caller_headers: tuple[str, ...]
    credentials: Mapping[str, TargetCredential]
    hosts: tuple[HostPattern, ...]
    rules: ScopeRules
    filters: tuple[Filter, ...] = ()
    redact: tuple = ()
    checks: tuple[Check, ...] = ()


@dataclass(frozen=True, slots=True)
class Caller:
    """A proxy credential as the request path needs it."""

    proxy: str
    name: str
    auth: str
    digest: bytes | None  # None: a credential that verifies tokens (rr_addon.identity.service)
    username: str | None
    active: bool
    expires_at: float | None  # epoch seconds
    target_credentials: Mapping[str, str]
    rules: ScopeRules
    filters: tuple[Filter, ...] = ()
    redact: tuple = ()
    generation: str = ""  # renewed when the credential is re-created or its secret changes; minted tokens carry it


@dataclass(frozen=True, slots=True)
class Binding:
    """A target bound to a proxy, with the target credential it injects."""

    target: Target
    credential: str | None


@dataclass(frozen=True, slots=True)
class Proxy:
    name: str
    active: bool
    mode: str
    default_effect: str
    routes: HostIndex[Binding]
    callers: Mapping[str, Caller]
    rules: ScopeRules
    meters: ProxyMeters  # holds a per-window cache of counter keys; nothing else changes
    meters_need_body: bool  # a meter's `when`, reservation or price reads the request body
    filters: tuple[Filter, ...] = ()
    redact: tuple = ()
    checks: tuple[Check, ...] = ()


@dataclass(frozen=True, slots=True)
class VerifierSpec:
    """A proxy credential that verifies tokens (`jwt_verify`, `oauth2`): its validated
    settings and its secret (an HMAC key or an introspection client secret), from which
    `rr_addon.identity.service` builds the verifier."""

    proxy: str
    name: str
    settings: schema.ProxyCredential
    secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class TokenSourceSpec:
    """A target credential whose upstream token rr fetches (`oauth2_client_credentials`)."""

    target: str
    name: str
    settings: schema.TargetCredential
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    hmac_key: bytes
    proxies: Mapping[str, Proxy]
    targets: Mapping[str, Target]
    by_token: Mapping[bytes, Caller]  # token digest -> caller
    by_basic: Mapping[bytes, Caller]  # basic (username, secret) digest -> caller
    caller_headers: HostIndex[tuple[str, ...]]  # host -> extra caller-credential headers
    connect_ports: frozenset[int]  # ports some target allows (CONNECT to others is refused)
    verifiers: tuple[VerifierSpec, ...] = ()  # in configuration order
    token_sources: tuple[TokenSourceSpec, ...] = ()
    revoked_tokens: frozenset[str] = frozenset()  # ids of revoked minted tokens not yet expired
    # (proxy, credential, target, target credential) -> Pipeline, every combination compiled when built
    pipelines: Mapping[tuple, Pipeline] = field(default_factory=lambda: MappingProxyType({}), compare=False, repr=False)

    def caller_headers_for(self, host: str, port: int, scheme: str) -> tuple[str, ...]:
        return self.caller_headers.lookup(host, port, scheme) or ()

    def pipeline(self, caller: Caller, target: Target, cred: TargetCredential | None) -> Pipeline:
        """The response and request processing of this combination of the four scopes
        (compiled when the snapshot was built: see `_pipelines`)."""
        return self.pipelines[_pipeline_key(caller, target, cred)]


def _pipeline_key(caller: Caller, target: Target, cred: TargetCredential | None) -> tuple:
    """One entry per combination of the scopes that contribute, so credentials without
    filters or redaction of their own share one (memory stays bounded by configuration)."""
    return (
        caller.proxy,
        caller.name if caller.filters or caller.redact else None,
        target.name,
        cred.name if cred is not None and (cred.filters or cred.redact) else None,
    )


def _compile_pipeline(proxy: Proxy, caller: Caller, target: Target, cred: TargetCredential | None, redactor) -> Pipeline:
    scopes = (cred, target, caller, proxy) if cred is not None else (target, caller, proxy)  # the fixed filter order
    filters = tuple(f for s in scopes for f in s.filters)
    entries = [e for s in scopes for e in s.redact]
    checks = target.checks + proxy.checks
    if not filters and not entries and not checks:
        return EMPTY
    return Pipeline(filters, redactor(entries, "response"), redactor(entries, "request"), checks)


def _pipelines(proxies: Mapping[str, Proxy], bound: Mapping[str, list[Target]], hmac_key: bytes) -> Mapping[tuple, Pipeline]:
    """Every pipeline a request can need: each proxy's callers × the targets bound to it ×
    each target credential (or none), compiled once per distinct key."""
    out: dict[tuple, Pipeline] = {}
    redactors: dict[tuple, Redactor | None] = {}

    def redactor(entries: list, direction: str) -> Redactor | None:
        """compile_redactor, once per distinct list of entries: a proxy-wide `redact:` shared by
        every pipeline that has it (each copy holds ~0.3 MB of RE2 programs; docs/performance.md: Memory)."""
        key = (direction, tuple(e.model_dump_json(exclude={"description"}) for e in entries))
        if key not in redactors:
            redactors[key] = compile_redactor(entries, key=hmac_key, direction=direction)
        return redactors[key]

    for proxy in proxies.values():
        for caller in proxy.callers.values():
            for target in bound[proxy.name]:
                for cred in (None, *target.credentials.values()):
                    key = _pipeline_key(caller, target, cred)
                    if key not in out:
                        out[key] = _compile_pipeline(proxy, caller, target, cred, redactor)
    return MappingProxyType(out)


class CompileError(ValueError):
    pass


class When:
    """A meter's `when:` as a predicate over the RuleRequest (the rule match syntax)."""

    __slots__ = ("scope",)

    def __init__(self, match) -> None:
        self.scope = compile_when(match)

    def __call__(self, request) -> bool:
        return self.scope.evaluate(request).allowed


def _rules(scope: str, owner: str, obj) -> ScopeRules:
    try:
        return ScopeRules.compile(scope, obj.rules, obj.default_effect)
    except ValueError as e:
        raise CompileError(f"{scope} {owner}: {e}") from None


def compile_snapshot(
    config: schema.Config,
    *,
    version: int,
    hmac_key: bytes,
    target_secrets: Mapping[tuple[str, str], str],
    caller_digests: Mapping[tuple[str, str], bytes],
    caller_secrets: Mapping[tuple[str, str], str] | None = None,
    caller_generations: Mapping[tuple[str, str], str] | None = None,
    revoked_tokens: frozenset[str] = frozenset(),
    previous_secrets: Mapping[tuple[str, str], tuple[str, ...]] | None = None,
) -> Snapshot:
    """Build the snapshot. `target_secrets` maps (target, credential) to the
    plaintext secret; `caller_digests` maps (proxy, credential) to its digest;
    `caller_secrets` holds the secrets of credentials that verify tokens;
    `caller_generations` what minted tokens of each proxy credential are bound to;
    `previous_secrets` the values a rotation replaced, still scrubbed from
    responses (rr_addon.rotation)."""
    caller_secrets = caller_secrets or {}
    caller_generations = caller_generations or {}
    previous_secrets = previous_secrets or {}
    verifiers: list[VerifierSpec] = []
    token_sources: list[TokenSourceSpec] = []
    targets: dict[str, Target] = {}
    header_sets: dict[HostPattern, set[str]] = {}
    ports: set[int] = set()
    for t in config.targets:
        creds = {}
        for c in t.credentials:
            secret = target_secrets.get((t.name, c.name))
            if c.needs_secret and secret is None:
                raise CompileError(f"targets[{t.name}].credentials[{c.name}]: no stored secret")
            inj = build_injection(t.name, c, secret)
            old = previous_secrets.get((t.name, c.name), ())
            if old and not inj.dynamic:
                forms = tuple(s for o in old for s in build_injection(t.name, c, o).secrets)
                inj = replace(inj, secrets=inj.secrets + forms)  # scrub pairs are recomputed
            if inj.dynamic and secret is not None:
                token_sources.append(TokenSourceSpec(t.name, c.name, c, secret))
            creds[c.name] = TargetCredential(
                t.name, c.name, c.kind, inj, _rules(TARGET_CREDENTIAL, f"{t.name}/{c.name}", c), compile_filters(c.filters), tuple(c.redact)
            )
        patterns = tuple(parse_host_pattern(h) for h in t.hosts)
        for p in patterns:
            header_sets.setdefault(p, set()).update(h.lower() for h in t.caller_headers)
            if p.port is not None:
                ports.add(p.port)
            else:
                ports.update(DEFAULT_PORTS[s] for s in t.schemes)
        targets[t.name] = Target(
            name=t.name,
            schemes=frozenset(t.schemes),
            default_effect=t.default_effect,
            allow_private_addresses=t.allow_private_addresses,
            allow_path_parameters=t.allow_path_parameters,
            allow_encoded_slashes=t.allow_encoded_slashes,
            caller_headers=tuple(h.lower() for h in t.caller_headers),
            credentials=MappingProxyType(creds),
            hosts=patterns,
            rules=_rules(TARGET, t.name, t),
            filters=compile_filters(t.filters),
            redact=tuple(t.redact),
            checks=compile_checks(t.validate_),
        )

    proxies: dict[str, Proxy] = {}
    by_token: dict[bytes, Caller] = {}
    by_basic: dict[bytes, Caller] = {}
    bound: dict[str, list[Target]] = {}
    for p in config.proxies:
        entries = []
        bound[p.name] = [targets[pt.target] for pt in p.targets]
        for pt in p.targets:
            target = targets[pt.target]
            cred = pt.credential
            if cred is None and len(target.credentials) == 1:
                cred = next(iter(target.credentials))
            binding = Binding(target, cred)
            entries.extend((pattern, binding) for pattern in target.hosts)
        callers = {}
        for c in p.credentials:
            digest = caller_digests.get((p.name, c.name))
            if c.verifies:
                digest = None
                verifiers.append(VerifierSpec(p.name, c.name, c, caller_secrets.get((p.name, c.name))))
            elif digest is None:
                raise CompileError(f"proxies[{p.name}].credentials[{c.name}]: no stored secret digest")
            caller = Caller(
                proxy=p.name,
                name=c.name,
                auth=c.auth,
                digest=digest,
                username=getattr(c, "username", None),
                active=c.active,
                expires_at=c.expires_at.timestamp() if c.expires_at else None,
                target_credentials=MappingProxyType(dict(c.target_credentials)),
                rules=_rules(PROXY_CREDENTIAL, f"{p.name}/{c.name}", c),
                filters=compile_filters(c.filters),
                redact=tuple(c.redact),
                generation=caller_generations.get((p.name, c.name), ""),
            )
            index = by_basic if c.auth == "basic" else by_token
            if digest is None:
                callers[c.name] = caller  # found by token verification, not by digest
                continue
            if digest in index:
                other = index[digest]
                raise CompileError(
                    f"proxies[{p.name}].credentials[{c.name}]: same secret as proxies[{other.proxy}].credentials[{other.name}]"
                )
            index[digest] = caller
            callers[c.name] = caller
        meters = compile_meters(p.meters, When)
        proxies[p.name] = Proxy(
            name=p.name,
            active=p.active,
            mode=p.mode,
            default_effect=p.default_effect,
            routes=HostIndex(entries),
            callers=MappingProxyType(callers),
            rules=_rules(PROXY, p.name, p),
            meters=ProxyMeters(p.name, meters),
            meters_need_body=any(m.when is not None and m.when.scope.needs_body for m in meters) or meters_read_request_body(meters),
            filters=compile_filters(p.filters),
            redact=tuple(p.redact),
            checks=compile_checks(p.validate_),
        )

    return Snapshot(
        version=version,
        hmac_key=hmac_key,
        proxies=MappingProxyType(proxies),
        targets=MappingProxyType(targets),
        by_token=MappingProxyType(by_token),
        by_basic=MappingProxyType(by_basic),
        caller_headers=HostIndex((p, tuple(sorted(h))) for p, h in header_sets.items() if h),
        connect_ports=frozenset(ports),
        verifiers=tuple(verifiers),
        token_sources=tuple(token_sources),
        revoked_tokens=revoked_tokens,
        pipelines=_pipelines(proxies, bound, hmac_key),
    )
