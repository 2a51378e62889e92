"""The access rules of one scope, compiled once and evaluated per request. No I/O.

Semantics (docs/policy.md: rules): every rule whose fields all match is collected; any
matching deny denies, else any matching approve holds (docs/approvals.md), else
any matching allow allows, else the scope's `default_effect`. The rule reported is the highest-priority matching rule of
the deciding effect (ties: declaration order).

Matching details the contract leaves open:
- Methods compare upper-cased on both sides; paths are canonical
  (`rr_addon.policy.paths`); header names arrive lower-case.
- Body and claim values are matched in their string form: strings as they
  are; numbers, booleans and null in JSON spelling (`5`, `true`, `null`; a
  body number with a fraction or exponent as the body writes it: `1.50`);
  objects and arrays as compact JSON.
- `json_path` is rr's one JSONPath dialect (`rr_addon.policy.jsonpaths`, the
  walker filters and meters use), compiled when the configuration loads;
  filter comparisons are exact (the body's numbers are Decimals) and `=~` is RE2. A node (or claim) whose value
  is an array matches when any element matches. A form body is seen by
  `json_path` as `{name: [values...]}`, so `$.model` matches any `model` field.
- A rule with `claims` never matches an unverified caller (claims None),
  whatever the presence.
- Repeated parameters (docs/security.md): a query parameter, header or form field
  sent several times can be read by the upstream as its first, its last or
  all of its occurrences, so a value condition is decided for every reading.
  An allow rule's condition must hold whichever occurrence the upstream reads:
  `value` must match EVERY occurrence of the names the matcher's `name`
  matches (with `presence: absent`: no occurrence). A deny rule's condition
  holds if it holds for ANY reading: `value` matches SOME occurrence (with
  `presence: absent`: not every occurrence matches, or there is none). A
  meter's `when` is read like a deny rule: a quota counts what any reading
  would. JSON arrays are data, not repetition: an element matching is enough.
- A body the rules read as JSON but that does not parse (`body_opaque`: not
  declared JSON or form) has no JSON nodes; a `json_path` condition of an allow
  rule never holds on it, whatever the presence: rr cannot vouch for it.
- Fields are checked cheapest first: methods, path, headers, query, claims,
  body, mcp; `explain()` names the first that did not match.
- `mcp` reads the body as JSON-RPC calls (rr_addon.core.mcp): a deny rule (and
  a meter's `when`) matches if any call of a batch matches, an allow rule only
  if every call does.

Cost (this runs on every request, for up to hundreds of rules): all path
patterns of a scope are searched in one RE2::Set pass (every path form —
prefix, glob, full-match regex, search pattern — is one RE2 pattern there:
rr_addon.policy.paths_schema), and a request only
considers rules whose path matched (or that have no path, or an `absent` one),
pre-selected by method. Every other pattern is grouped with the patterns of
other rules on the same subject (one header, one JSON path, the header names,
...) into one RE2::Set, matched once per value and cached for the request, so
a check is a set lookup. (One `re2.search` costs 2-6 µs through the Python
wrapper, which computes match offsets; one set match costs ~1-2 µs.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Callable, Iterable, Mapping, Sequence

import re2

from rr_addon.core import reasons
from rr_addon.policy.rules_schema import Approval, BodyMatch, ClaimMatch, HeaderMatch, Match, Rule, re2_options
from rr_addon.policy.bodies import JsonError, JsonNumber, dump_json
from rr_addon.policy.jsonpaths import JsonPath, compile_path, find
from rr_addon.core import mcp

ALLOW = "allow"
DENY = "deny"
APPROVE = "approve"

# The fixed reasons of a scope's result; tests and audit readers rely on them.


@dataclass(frozen=True, slots=True)
class RuleRequest:
    """Everything a rule can look at; built once per request by the glue."""

    method: str
    path: str  # canonical path, no query
    headers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # lower-case name -> values
    query: tuple[tuple[str, str], ...] = ()  # decoded (name, value) pairs, in order
    body_json: object | None = None  # parsed JSON body
    body_form: tuple[tuple[str, str], ...] | None = None  # decoded form fields
    body_text: str | None = None  # raw body text, for `pattern`
    claims: Mapping[str, object] | None = None  # verified claims; None: unverified caller
    body_opaque: bool = False  # a body json_path rules read that does not parse as JSON


@dataclass(frozen=True, slots=True)
class ScopeResult:
    effect: str  # "allow" | "deny" | "approve"
    rule: str | None  # the deciding rule; None when the scope default decided
    reason: str
    approval: Approval | None = None  # an approve rule's settings

    @property
    def held(self) -> bool:
        return self.effect == APPROVE

    @property
    def allowed(self) -> bool:
        return self.effect == ALLOW


@dataclass(frozen=True, slots=True)
class RuleTrace:
    rule: str
    effect: str
    priority: int
    matched: bool
    failed: str | None  # first field that did not match: "methods", "path", "headers[0]", ...
    path: str | None = None  # how the rule's path condition read this path: "glob '/v1/*' matched"
    mcp: str | None = None  # how the rule's mcp condition read the body: "mcp: tools/call delete_file matched"


@dataclass(frozen=True, slots=True)
class ScopeTrace:
    scope: str
    result: ScopeResult
    rules: tuple[RuleTrace, ...]  # every rule, highest priority first


# --------------------------------------------------------------------------
# RE2 sets.

_OPTIONS = re2_options()
_SET_OPTIONS = re2_options()
_SET_OPTIONS.max_mem = 64 << 20  # room for hundreds of patterns; too big still splits
_SENTINEL = ""  # matches every text


def _utf8(text: str) -> bytes:
    # mitmproxy keeps undecodable bytes as lone surrogates; they must not raise.
    return text.encode("utf-8", "surrogatepass")


class PatternSet:
    """Which of several RE2 patterns a text matches (search semantics), in one pass.

    The Python wrapper of RE2::Set cannot report that the DFA ran out of memory:
    the result is just empty, which would turn a deny into a miss. So each set
    also holds an always-matching sentinel, and a result without it falls back
    to one search per pattern. A set too large to compile is split in halves."""

    __slots__ = ("_chunks",)

    def __init__(self, patterns: Sequence[str]):
        self._chunks: list[tuple[int, re2.Set | None, tuple]] = []
        self._build(list(patterns), 0)

    def _build(self, patterns: list[str], offset: int) -> None:
        if not patterns:
            return
        fallback = tuple(re2.compile(_utf8(p), _OPTIONS) for p in patterns)
        s = re2.Set.SearchSet(_SET_OPTIONS)
        try:
            for p in (_SENTINEL, *patterns):
                s.Add(_utf8(p))
            s.Compile()
        except re2.error:
            if len(patterns) == 1:
                self._chunks.append((offset, None, fallback))
                return
            half = len(patterns) // 2
            self._build(patterns[:half], offset)
            self._build(patterns[half:], offset + half)
            return
        self._chunks.append((offset, s, fallback))

    def match(self, text: str | bytes) -> list[int]:
        """Indices of the patterns that match."""
        data = _utf8(text) if isinstance(text, str) else text
        hits: list[int] = []
        for offset, s, fallback in self._chunks:
            found = s.Match(data) if s is not None else None
            if found:
                hits.extend(offset + i - 1 for i in found if i)
            else:
                hits.extend(offset + i for i, rx in enumerate(fallback) if rx.search(data) is not None)
        return hits


# --------------------------------------------------------------------------
# Values in string form, and what one request offers the matchers.


def render(value: object) -> str:
    if isinstance(value, str):
        return value
    if type(value) is JsonNumber:
        return value.text  # a number with a fraction or exponent, as it was written
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except TypeError:  # an object or array holding JsonNumbers: orjson writes their text
        try:
            return dump_json(value).decode("utf-8")
        except JsonError:  # and a lone surrogate, which orjson refuses
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _strings(value: object) -> Iterable[str]:
    return map(render, value) if isinstance(value, (list, tuple)) else (render(value),)


# A subject is what a group of patterns is matched against:
#   ("hname",) / ("qname",)   request header / query names (non-literal name patterns)
#   ("h", name) / ("q", name) the values of one header / query parameter
#   ("hn", i) / ("qn", i)     the values of the names matching name pattern i
#   ("c", claim) / ("j", path) a claim's / a JSON path's values;  ("b",) the raw body
Subject = tuple


class _Groups:
    """Patterns grouped by subject. All patterns on one subject run as one set, so
    a request pays one set match per value of a subject, however many rules
    look at it; matchers then test their pattern's index."""

    __slots__ = ("_patterns", "sets")

    def __init__(self) -> None:
        self._patterns: dict[Subject, dict[str, int]] = {}
        self.sets: dict[Subject, PatternSet] = {}

    def add(self, subject: Subject, pattern: str) -> int:
        group = self._patterns.setdefault(subject, {})
        return group.setdefault(pattern, len(group))

    def seal(self) -> _Groups:
        self.sets = {subject: PatternSet(list(group)) for subject, group in self._patterns.items()}
        return self


class _Context:
    """One request as the matchers see it, with per-request caches."""

    __slots__ = ("req", "_sets", "_paths", "_query", "_hits", "_every", "_names", "_json", "_mcp")

    def __init__(self, req: RuleRequest, sets: Mapping[Subject, PatternSet], paths: Mapping[str, JsonPath]):
        self.req = req
        self._sets = sets
        self._paths = paths
        self._query: dict[str, list[str]] | None = None
        self._hits: dict[Subject, set[int]] = {}
        self._every: dict[Subject, set[int]] = {}
        self._names: dict[Subject, dict[int, list[str]]] = {}
        self._json: dict[str, tuple[bool, tuple[str, ...]]] = {}
        self._mcp: list[mcp.Calls] = []

    def mcp_calls(self) -> mcp.Calls:
        """The JSON-RPC calls of the body (rr_addon.core.mcp), read once per request."""
        if not self._mcp:
            req = self.req
            self._mcp.append(mcp.calls(req.body_json, opaque=req.body_opaque and bool(req.body_text)))
        return self._mcp[0]

    def query_map(self) -> dict[str, list[str]]:
        if self._query is None:
            self._query = {}
            for k, v in self.req.query:
                self._query.setdefault(k, []).append(v)
        return self._query

    def names(self, subject: Subject, index: int) -> list[str]:
        """The request's header (subject ("hname",)) or query names matching name pattern `index`."""
        table = self._names.get(subject)
        if table is None:
            table = self._names[subject] = {}
            patterns = self._sets[subject]
            for name in self.req.headers if subject[0] == "hname" else self.query_map():
                for i in patterns.match(name):
                    table.setdefault(i, []).append(name)
        return table.get(index, [])

    def json_nodes(self, path: str) -> tuple[bool, tuple[str, ...]]:
        """Whether `path` finds any node in the body, and the nodes' string forms."""
        cached = self._json.get(path)
        if cached is None:
            req = self.req
            doc = req.body_json
            if doc is None and req.body_form is not None:
                form: dict[str, list[str]] = {}
                for k, v in req.body_form:
                    form.setdefault(k, []).append(v)
                doc = form
            nodes = find(doc, self._paths[path]) if doc is not None else []
            cached = self._json[path] = (bool(nodes), tuple(s for n in nodes for s in _strings(n)))
        return cached

    def values(self, subject: Subject) -> Iterable[str | bytes]:
        kind, req = subject[0], self.req
        if kind == "h":
            return req.headers.get(subject[1], ())
        if kind == "q":
            return self.query_map().get(subject[1], ())
        if kind == "hn":
            return [v for n in self.names(("hname",), subject[1]) for v in req.headers[n]]
        if kind == "qn":
            query = self.query_map()
            return [v for n in self.names(("qname",), subject[1]) for v in query[n]]
        if kind == "c":
            claims = req.claims
            return _strings(claims[subject[1]]) if claims is not None and subject[1] in claims else ()
        if kind == "j":
            return self.json_nodes(subject[1])[1]
        return () if req.body_text is None else (_utf8(req.body_text),)

    def hits(self, subject: Subject) -> set[int]:
        """Indices of the subject's patterns that match at least one of its values."""
        got = self._hits.get(subject)
        if got is None:
            got = self._hits[subject] = set()
            patterns = self._sets[subject]
            for value in self.values(subject):
                got.update(patterns.match(value))
        return got

    def every(self, subject: Subject) -> set[int]:
        """Indices of the subject's patterns that match every one of its values (none without values).
        The nodes of a JSON body are not occurrences of one parameter: any of them is enough."""
        got = self._every.get(subject)
        if got is None:
            if subject[0] == "j" and self.req.body_form is None:
                got = self._every[subject] = self.hits(subject)
                return got
            patterns = self._sets[subject]
            common: set[int] | None = None
            for value in self.values(subject):
                found = set(patterns.match(value))
                common = found if common is None else common & found
                if not common:
                    break
            got = self._every[subject] = common or set()
        return got


Check = Callable[[_Context], bool]


# --------------------------------------------------------------------------
# Compiling matchers into checks.


def _flag(pattern: str, ignore_case: bool) -> str:
    return "(?i)" + pattern if ignore_case else pattern


def _literal_name(pattern: str, fold: bool) -> str | None:
    """`^name$` as a plain name, so the common case is a dict lookup, not a regex."""
    if fold and pattern.startswith("(?i)"):
        pattern = pattern[4:]
    body = pattern[1:-1]
    if pattern[:1] == "^" and pattern[-1:] == "$" and body and all(c.isascii() and (c.isalnum() or c in "-_") for c in body):
        return body.lower() if fold else body
    return None


class _Compiler:
    """Turns matchers into checks, registering their patterns by subject."""

    def __init__(self) -> None:
        self.groups = _Groups()
        self.json_paths: dict[str, JsonPath] = {}

    def _found(self, subject: Subject, value: str | None, ignore_case: bool, present: Check, every: bool = False) -> Check:
        """With a value pattern: some value (`every`: every value) of the subject matches it; else `present`."""
        if value is None:
            return present
        index = self.groups.add(subject, _flag(value, ignore_case))
        if every:
            return lambda ctx: index in ctx.every(subject)
        return lambda ctx: index in ctx.hits(subject)

    def _named(self, kind: str, m: HeaderMatch, ignore_case: bool, every: bool) -> Check:
        """Header (kind "h") or query ("q") matcher, before presence."""
        header = kind == "h"
        literal = _literal_name(m.name, fold=True) if header else (None if ignore_case else _literal_name(m.name, fold=False))
        if literal is not None:
            if header:
                present: Check = lambda ctx: bool(ctx.req.headers.get(literal))
            else:
                present = lambda ctx: literal in ctx.query_map()
            return self._found((kind, literal), m.value, ignore_case, present, every)
        names: Subject = ("hname",) if header else ("qname",)
        # Header names are case-insensitive, query names only with ignore_case.
        index = self.groups.add(names, "(?i)" + m.name if header else _flag(m.name, ignore_case))
        return self._found((kind + "n", index), m.value, ignore_case, lambda ctx: bool(ctx.names(names, index)), every)

    def claim(self, m: ClaimMatch, ignore_case: bool) -> Check:
        claim = m.claim
        found = self._found(("c", claim), m.value, ignore_case, lambda ctx: claim in ctx.req.claims)  # type: ignore[operator]
        absent = m.presence == "absent"
        # An unverified caller (claims None) never matches, whatever the presence.
        return lambda ctx: ctx.req.claims is not None and found(ctx) != absent

    def body(self, m: BodyMatch, ignore_case: bool, every: bool, vouch: bool) -> Check:
        if m.pattern is not None:
            index = self.groups.add(("b",), _flag(m.pattern, ignore_case))
            return _presence(lambda ctx: index in ctx.hits(("b",)), m.presence)
        path = m.json_path
        assert path is not None
        self.json_paths[path] = compile_path(path)  # compiled now, not on the first request
        found = _presence(self._found(("j", path), m.value, ignore_case, lambda ctx: ctx.json_nodes(path)[0], every), m.presence)
        if vouch:  # an allow rule: a body that is not JSON satisfies no json_path condition
            return lambda ctx: not ctx.req.body_opaque and found(ctx)
        return found

    def checks(self, rule: Rule, any_reading: bool = False) -> tuple[tuple[str, Check], ...]:
        ic = rule.ignore_case
        allow = rule.effect == ALLOW and not any_reading

        def every(m) -> bool:
            # The reading that makes the rule match least for an allow rule, most for a deny rule.
            return allow != (m.presence == "absent")

        out = [(f"headers[{i}]", _presence(self._named("h", m, ic, every(m)), m.presence)) for i, m in enumerate(rule.headers)]
        out += [(f"query[{i}]", _presence(self._named("q", m, ic, every(m)), m.presence)) for i, m in enumerate(rule.query)]
        out += [(f"claims[{i}]", self.claim(m, ic)) for i, m in enumerate(rule.claims)]
        out += [(f"body[{i}]", self.body(m, ic, every(m), allow)) for i, m in enumerate(rule.body)]
        if rule.mcp is not None:
            condition = mcp.compile_condition(rule.mcp, allow=allow, ignore_case=ic)
            out.append(("mcp", lambda ctx: condition.holds(ctx.mcp_calls(), _node_strings)))
        return tuple(out)


def _node_strings(node: object) -> list[str]:
    return list(_strings(node))


def _presence(found: Check, presence: str) -> Check:
    return (lambda ctx: not found(ctx)) if presence == "absent" else found


# --------------------------------------------------------------------------
# A scope.


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    effect: str
    priority: int
    rank: tuple[int, int, int]  # evaluation order: denies, then approves, then allows; then priority, then declaration
    methods: frozenset[str] | None
    path: int | None  # index into the scope's PatternSet
    path_absent: bool
    path_form: str | None  # `rr explain`'s name for the path condition: "glob '/v1/*'"
    checks: tuple[tuple[str, Check], ...]
    result: ScopeResult
    mcp: mcp.Condition | None = None  # for `rr explain`'s note (the check itself is in `checks`)

    def rest_matches(self, ctx: _Context) -> bool:
        return all(check(ctx) for _, check in self.checks)


_rank = attrgetter("rank")


class ScopeRules:
    """The compiled rules of one scope. Immutable; build with `compile`."""

    __slots__ = (
        "scope",
        "default_effect",
        "needs_body",
        "needs_claims",
        "_report",
        "_paths",
        "_by_path",
        "_by_method",
        "_any_method",
        "_default",
        "_sets",
        "_json_paths",
    )

    def __init__(
        self, scope: str, rules: Sequence[_Rule], paths: PatternSet | None, groups: _Groups, default_effect: str, json_paths: Mapping[str, JsonPath]
    ):
        self.scope = scope
        self._sets = groups.seal().sets
        self._json_paths = json_paths
        self.default_effect = default_effect
        self.needs_body = any(label.startswith("body") or label == "mcp" for r in rules for label, _ in r.checks)
        self.needs_claims = any(label.startswith("claims") for r in rules for label, _ in r.checks)
        self._report = tuple(sorted(rules, key=lambda r: (-r.priority, r.rank[2])))
        self._paths = paths
        # Rules that need their path to match are found through the path set;
        # the others are candidates for every request, pre-selected by method.
        indexed = [r for r in rules if r.path is not None and not r.path_absent]
        others = sorted((r for r in rules if r.path is None or r.path_absent), key=_rank)
        by_path: list[list[_Rule]] = [[] for _ in range(max((r.path for r in rules if r.path is not None), default=-1) + 1)]
        for r in sorted(indexed, key=_rank):
            by_path[r.path].append(r)  # type: ignore[index]
        self._by_path = tuple(tuple(b) for b in by_path)
        methods = {m for r in rules if r.methods for m in r.methods}
        self._by_method = {m: tuple(r for r in others if r.methods is None or m in r.methods) for m in methods}
        self._any_method = tuple(r for r in others if r.methods is None)
        if default_effect == ALLOW:
            self._default = ScopeResult(ALLOW, None, reasons.DEFAULT_ALLOWS)
        else:
            self._default = ScopeResult(DENY, None, reasons.DEFAULT_DENIES)

    @classmethod
    def compile(cls, scope: str, rules: Sequence[Rule], default_effect: str, *, any_reading: bool = False) -> ScopeRules:
        """Compile validated rules. ValueError on a bad default or a duplicate name.
        `any_reading`: every rule matches on any reading of repeated parameters, as a deny rule does."""
        if default_effect not in (ALLOW, DENY):
            raise ValueError(f"default_effect must be 'allow' or 'deny', not {default_effect!r}")
        compiler = _Compiler()
        path_index: dict[str, int] = {}
        compiled: list[_Rule] = []
        seen: set[str] = set()
        for order, rule in enumerate(rules):
            if rule.name in seen:
                raise ValueError(f"{scope}: duplicate rule name {rule.name!r}")
            seen.add(rule.name)
            path = None
            if rule.path is not None:
                path = path_index.setdefault(_flag(rule.path.re2(), rule.ignore_case), len(path_index))
            deny = rule.effect == DENY
            kind = 0 if deny else 1 if rule.effect == APPROVE else 2
            reason = reasons.DENIED_BY_RULE if deny else reasons.HELD_FOR_APPROVAL if kind == 1 else reasons.ALLOWED_BY_RULE
            compiled.append(
                _Rule(
                    name=rule.name,
                    effect=rule.effect,
                    priority=rule.priority,
                    rank=(kind, -rule.priority, order),
                    methods=frozenset(rule.methods) if rule.methods is not None else None,
                    path=path,
                    path_absent=rule.path is not None and rule.path.presence == "absent",
                    path_form=rule.path.describe() if rule.path is not None else None,
                    checks=compiler.checks(rule, any_reading),
                    result=ScopeResult(rule.effect, rule.name, reason, rule.hold if kind == 1 else None),
                    # an approve rule restricts, like a deny rule: it matches on any reading
                    mcp=mcp.compile_condition(rule.mcp, allow=rule.effect == ALLOW and not any_reading, ignore_case=rule.ignore_case) if rule.mcp else None,
                )
            )
        paths = PatternSet(list(path_index)) if path_index else None
        return cls(scope, compiled, paths, compiler.groups, default_effect, compiler.json_paths)

    def _path_hits(self, path: str) -> list[int]:
        return self._paths.match(path) if self._paths is not None else []

    def evaluate(self, req: RuleRequest) -> ScopeResult:
        method = req.method.upper()
        hits = self._path_hits(req.path)
        candidates: Sequence[_Rule] = self._by_method.get(method, self._any_method)
        if hits:
            by_path = self._by_path
            extra = [r for i in hits for r in by_path[i] if r.methods is None or method in r.methods]
            if extra:
                candidates = sorted((*candidates, *extra), key=_rank)
        ctx = _Context(req, self._sets, self._json_paths)
        for rule in candidates:
            if rule.path_absent and rule.path in hits:
                continue
            if rule.rest_matches(ctx):
                return rule.result  # denies come first, then approves: the first match decides
        return self._default

    def explain(self, req: RuleRequest) -> ScopeTrace:
        """Every rule, matched or not and the first field that failed, plus the result
        `evaluate` gives for the same request."""
        method = req.method.upper()
        hits = set(self._path_hits(req.path))
        ctx = _Context(req, self._sets, self._json_paths)
        traces: list[RuleTrace] = []
        matched: list[_Rule] = []
        for rule in self._report:
            failed = None
            if rule.methods is not None and method not in rule.methods:
                failed = "methods"
            elif rule.path is not None and (rule.path in hits) == rule.path_absent:
                failed = "path"
            else:
                failed = next((label for label, check in rule.checks if not check(ctx)), None)
            if failed is None:
                matched.append(rule)
            note = rule.mcp.note(ctx.mcp_calls(), _node_strings) if rule.mcp is not None and failed not in ("methods", "path") else None
            traces.append(RuleTrace(rule.name, rule.effect, rule.priority, failed is None, failed, _path_note(rule, hits, failed), note))
        decider = min(matched, key=_rank, default=None)
        return ScopeTrace(self.scope, decider.result if decider else self._default, tuple(traces))

    def __len__(self) -> int:
        return len(self._report)


def _path_note(rule: _Rule, hits: set[int], failed: str | None) -> str | None:
    """What the path condition made of the path, once it was looked at (methods matched)."""
    if rule.path_form is None or failed == "methods":
        return None
    found = rule.path in hits
    note = f"path {rule.path_form} {'matched' if found else 'did not match'}"
    return note + (" (presence: absent)" if rule.path_absent else "")


def compile_when(match: Match) -> ScopeRules:
    """Match fields used as a condition (a meter's `when`): the request matches
    exactly when `evaluate(req).allowed`; `needs_body` / `needs_claims` apply.
    Repeated parameters are read as a deny rule reads them: a quota counts a
    request if any reading of it matches."""
    fields = {name: getattr(match, name) for name in Match.model_fields}
    return ScopeRules.compile("when", [Rule(name="when", effect=ALLOW, **fields)], DENY, any_reading=True)
