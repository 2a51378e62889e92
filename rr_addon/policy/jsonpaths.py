"""JSONPath compiled once, evaluated by a direct walker.

`compile_path` parses with jsonpath-ng's extended parser (so the syntax is
exactly what jsonpath-ng accepts: root, child, wildcard, `..`, index, slice,
filter expressions) and turns the AST into a list of steps. `compile_matcher`
merges the paths of a filter into one automaton (a trie of their steps), so
one traversal serves them all: at each node the walker holds the states still
active, looks names up directly instead of iterating children, and visits
every node only below a `..`. jsonpath-ng's own find/filter builds a
DatumInContext per node and walks once per path; scripts/bench_filters.py
compares the two.

Semantics follow jsonpath-ng / RFC 9535, with these choices:
- Filter comparisons are exact: numbers compare as Decimals (so `0.1` in a
  filter equals the JSON number 0.1); `=~` uses RE2 (search semantics).
- Paths that use `where`, `wherenot`, the deprecated `|` union or `parent`
  are evaluated by jsonpath-ng itself (then mapped back to node locations);
  operators that compute new values (`len`, `keys`, `sorted`, `str()`,
  `sub()`, `split()`, arithmetic) select no node of the document and are
  refused. Deprecated syntax (unquoted words in comparisons, `&` for `&&`) is
  refused too, so a configuration keeps working on jsonpath-ng 2.0.

Array semantics of retain/destroy (see `retain` and `destroy`):
- retain keeps matched nodes whole, plus their ancestors with only the members
  that lead to a match. An array keeps the elements that are or contain a
  match, in their original order, and nothing else (no holes, no nulls):
  retain $.data[*].id on [{id:1,x:..},{x:..},{id:3}] gives [{id:1},{id:3}];
  retain $.data[0] gives a 1-element list.
- destroy removes every matched node: a member from its object, an element
  from its array (later elements move up; no null is left behind). All paths
  are evaluated on the input before anything is removed, so destroy
  [$.a[0], $.a[1]] removes the first two elements, not the first and third.
"""

from __future__ import annotations

import functools
import operator
import warnings
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Iterable, Sequence

import re2
from jsonpath_ng import jsonpath as jp
from jsonpath_ng.ext import filter as jpf
from jsonpath_ng.ext import parse as _jsonpath_ng_parse

from rr_addon.policy.bodies import MAX_DEPTH, JsonTooDeep


class JsonPathError(ValueError):
    """A JSONPath that cannot be compiled (reported at configuration time)."""


# Selector kinds. A path compiles to steps (descend, kind, arg): `descend` is the `..` before it.
NAME, WILD, INDEX, SLICE, FILTER = range(5)
MISSING: Any = object()  # "nothing kept" (None is a JSON value)


class _State:
    """A node of the automaton that runs many paths at once (a trie of their
    steps). `names` are looked up directly; `others` are wildcard, index, slice
    and filter selectors; a `sticky` state (after `..`) stays active on every
    descendant; `desc` is the sticky state entered together with this one."""

    __slots__ = ("names", "others", "sticky", "desc")

    def __init__(self, sticky: bool = False) -> None:
        self.names: dict[str, _Edge] = {}
        self.others: list[tuple[int, Any, _Edge]] = []
        self.sticky = sticky
        self.desc: _State | None = None

    @property
    def empty(self) -> bool:
        return not self.names and not self.others


class _Edge:
    """Where a selector leads: `match` if a path ends here, `states` active on the selected child."""

    __slots__ = ("match", "next", "states")

    def __init__(self) -> None:
        self.match = False
        self.next: _State | None = None
        self.states: tuple[_State, ...] = ()


def _automaton(paths: Sequence[Sequence[tuple]]) -> tuple[_State, ...]:
    """The states active at the root for a set of step lists (each non-empty)."""
    root = _State()
    edges: list[_Edge] = []
    for steps in paths:
        current = [root]
        for n, (descend, kind, arg) in enumerate(steps):
            reached: list[_State] = []
            for st in current:
                if descend:
                    if st.desc is None:
                        st.desc = _State(sticky=True)
                    st = st.desc
                for edge in _edges(st, kind, arg, edges):
                    if n == len(steps) - 1:
                        edge.match = True
                    else:
                        if edge.next is None:
                            edge.next = _State()
                        if edge.next not in reached:
                            reached.append(edge.next)
            current = reached
    for edge in edges:
        edge.states = _active(edge.next)
    return _active(root)


def _edges(st: _State, kind: int, arg: Any, made: list[_Edge]) -> list[_Edge]:
    if kind == NAME:
        out = []
        for name in dict.fromkeys(arg):
            if name not in st.names:
                st.names[name] = _Edge()
                made.append(st.names[name])
            out.append(st.names[name])
        return out
    for k, a, edge in st.others:
        if k == kind and (a is arg if kind == FILTER else a == arg):
            return [edge]
    edge = _Edge()
    st.others.append((kind, arg, edge))
    made.append(edge)
    return [edge]


def _active(st: _State | None) -> tuple[_State, ...]:
    if st is None:
        return ()
    out = () if st.empty else (st,)
    return out + (st.desc,) if st.desc is not None else out


@dataclass(frozen=True, slots=True, eq=False)
class JsonPath:
    text: str
    steps: tuple[tuple, ...] | None  # None when `fallback` evaluates it; () is the root itself
    fallback: Any = None  # a jsonpath-ng expression, for constructs the walker leaves to it

    @property
    def is_root(self) -> bool:
        return self.steps == ()

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True, eq=False)
class Matcher:
    """Several paths compiled to one automaton: one traversal serves them all."""

    states: tuple[_State, ...]
    root: bool  # some path is `$` itself
    fallbacks: tuple[JsonPath, ...] = ()

    def start(self, doc: Any) -> tuple[bool, tuple[_State, ...]]:
        """(root matched, states) for `doc`, adding fallback paths' concrete matches."""
        if not self.fallbacks:
            return self.root, self.states
        located = [loc for p in self.fallbacks for loc in _fallback_locations(doc, p)]
        root = self.root or any(not loc for loc in located)
        extra = _automaton([[(False, kind, (key,)) for kind, key in loc] for loc in located if loc])
        return root, self.states + extra


def compile_matcher(paths: Sequence[JsonPath]) -> Matcher:
    walked = [p.steps for p in paths if p.steps]
    return Matcher(
        _automaton(walked) if walked else (),
        any(p.is_root for p in paths),
        tuple(p for p in paths if p.fallback is not None),
    )


class _Unsupported(Exception):
    """The walker does not cover this node type (the path may still fall back)."""


# Node types jsonpath-ng evaluates for us; they select document nodes, so
# their matches map back to locations.
_FALLBACK_TYPES = (jp.Where, jp.WhereNot, jp._Union, jp.Parent)


@functools.lru_cache(maxsize=4096)
def compile_path(text: str) -> JsonPath:
    """Parse and compile once (jsonpath-ng parsing costs ~0.5 ms); cached by text."""
    if not isinstance(text, str) or not text.strip():
        raise JsonPathError("an empty JSONPath")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            ast = _jsonpath_ng_parse(text)
    except DeprecationWarning as e:
        raise JsonPathError(f"deprecated JSONPath syntax: {e}") from None
    except Exception as e:  # jsonpath-ng raises assorted types for bad syntax
        raise JsonPathError(f"not a valid JSONPath: {e}") from None
    try:
        _, steps = _flatten(ast)
    except _Unsupported as e:
        if _only_node_selectors(ast):
            return JsonPath(text, None, ast)
        raise JsonPathError(f"{e} computes a value rather than selecting part of the document") from None
    return JsonPath(text, tuple(steps))


def _flatten(node: Any) -> tuple[str | None, list[tuple]]:
    """(base, steps): base is "root", "this" or None (a bare selector)."""
    t = type(node)
    if t is jp.Root:
        return "root", []
    if t is jp.This:
        return "this", []
    if t is jp.Child or t is jp.Descendants:
        base, left = _flatten(node.left)
        rbase, right = _flatten(node.right)
        if rbase == "root" or (t is jp.Descendants and (rbase is not None or not right)):
            raise _Unsupported(str(node))
        if t is jp.Descendants:
            right[0] = (True,) + right[0][1:]
        return base, left + right
    if t is jp.Fields:
        if node._deprecated_wildcard_use and "*" in node.fields:
            return None, [(False, WILD, None)]
        return None, [(False, NAME, tuple(node.fields))]
    if t is jp.Wildcard:
        return None, [(False, WILD, None)]
    if t is jp.Index:
        return None, [(False, INDEX, tuple(node.indices))]
    if t is jp.Slice:
        if node.step == 0:
            return None, [(False, INDEX, ())]  # selects nothing
        return None, [(False, SLICE, slice(node.start, node.end, node.step))]
    if t is jpf.Filter:
        return None, [(False, FILTER, _all([_predicate(e) for e in node.expressions]))]
    raise _Unsupported(f"`{node}`" if isinstance(node, jp.JSONPath) else type(node).__name__)


def _only_node_selectors(node: Any) -> bool:
    """True if jsonpath-ng can evaluate `node` to document nodes (no computed values)."""
    t = type(node)
    if t in (jp.Root, jp.This, jp.Fields, jp.Wildcard, jp.Index, jp.Slice, jp.Parent):
        return True
    if t is jpf.Filter:
        try:
            _flatten(node)
            return True
        except _Unsupported:
            return False
    if t in (jp.Child, jp.Descendants) or isinstance(node, _FALLBACK_TYPES):
        return _only_node_selectors(node.left) and _only_node_selectors(node.right)
    return False


def _fallback_locations(doc: Any, path: JsonPath) -> list[list[tuple[int, Any]]]:
    out = []
    for datum in path.fallback.find(doc):
        loc: list[tuple[int, Any]] = []
        d = datum
        while d is not None and d.context is not None:
            p = d.path
            if type(p) is jp.Fields and len(p.fields) == 1:
                loc.append((NAME, p.fields[0]))
            elif type(p) is jp.Index and len(p.indices) == 1:
                loc.append((INDEX, p.indices[0]))
            elif type(p) is not jp.This:
                raise JsonPathError(f"{path.text}: cannot locate a match at {p}")
            d = d.context
        loc.reverse()
        out.append(loc)
    return out


# --------------------------------------------------------------------------
# Filter expressions, compiled to predicates(value, root) -> bool


def _all(preds: list[Callable]) -> Callable:
    if len(preds) == 1:
        return preds[0]
    return lambda v, root: all(p(v, root) for p in preds)


def _query(node: Any) -> Callable[[Any, Any], list]:
    """A filter operand (`@.a.b`, `$.x`) as a function (value, root) -> values."""
    base, steps = _flatten(node)
    from_root = base == "root"
    if not steps:
        return (lambda v, root: [root]) if from_root else (lambda v, root: [v])
    if not from_root and len(steps) == 1 and steps[0][:2] == (False, NAME) and len(steps[0][2]) == 1:
        (name,) = steps[0][2]  # the common `@.field`: one dict lookup

        def field(v: Any, root: Any) -> list:
            if type(v) is dict and name in v:
                return [v[name]]
            return []

        return field
    states = _automaton([steps])
    return lambda v, root: _find_in(root if from_root else v, states, root)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, Decimal)) and not isinstance(v, bool)


def _num(v: Any) -> Any:
    return Decimal(repr(v)) if type(v) is float else v  # 0.1 means 0.1, not the nearest binary float


_ORDER = {"==": operator.eq, "=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_EQUALITY_ONLY = jpf.EQUALITY_ONLY_OPERATOR_MAP


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if _is_number(a) and _is_number(b):
        return _num(a) == _num(b)
    if type(a) is list and type(b) is list:
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if type(a) is dict and type(b) is dict:
        return a.keys() == b.keys() and all(_equal(v, b[k]) for k, v in a.items())
    if type(a) in (list, dict) or type(b) in (list, dict):
        return False
    return type(a) is type(b) and a == b


def _compare(op: str, a: Any, b: Any) -> bool:
    """RFC 9535 §2.3.5.2.2: only two numbers or two strings are ordered."""
    if _is_number(a) and _is_number(b):
        return _ORDER[op](_num(a), _num(b))
    if type(a) is str and type(b) is str:
        return _ORDER[op](a, b)
    return _EQUALITY_ONLY[op](_equal(a, b))


def _predicate(expr: Any) -> Callable[[Any, Any], bool]:
    t = type(expr)
    if t is jpf.Or:
        ops = [_predicate(o) for o in expr.operands]
        return lambda v, root: any(p(v, root) for p in ops)
    if t is jpf.And:
        return _all([_predicate(o) for o in expr.operands])
    if t is not jpf.Expression:
        raise _Unsupported(str(expr))
    target = _query(expr.target)
    op, value = expr.op, expr.value
    if op == "!":
        return lambda v, root: not target(v, root)
    if op is None:
        return lambda v, root: bool(target(v, root))
    if isinstance(value, jp.JSONPath):
        other = _query(value)

        def against_query(v: Any, root: Any) -> bool:
            found, values = target(v, root), other(v, root)
            if not found or not values:  # two empty nodelists are equal; nothing else equals one
                return _EQUALITY_ONLY[op](not found and not values)
            return any(_compare(op, a, b) for a in found for b in values)

        return against_query
    if op == "=~":
        try:
            options = re2.Options()
            options.log_errors = False
            rx = re2.compile(value, options)
        except re2.error as e:
            raw = e.args[0] if e.args else b""
            detail = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            raise JsonPathError(f"not a valid RE2 regex {value!r}: {detail}") from None
        return lambda v, root: any(type(x) is str and rx.search(x) is not None for x in target(v, root))
    literal = _num(value)

    def against_literal(v: Any, root: Any) -> bool:
        found = target(v, root)
        if not found:  # a missing member equals nothing, so only != holds
            return op == "!="
        for x in found:
            if literal is None:
                hit = _EQUALITY_ONLY[op](x is None)
            elif isinstance(x, bool) or isinstance(literal, bool):
                hit = _EQUALITY_ONLY[op](x is literal)
            else:
                hit = _compare(op, x, literal)
            if hit:
                return True
        return False

    return against_literal


# --------------------------------------------------------------------------
# The walker


def _too_deep() -> JsonTooDeep:
    return JsonTooDeep(f"JSON nested deeper than {MAX_DEPTH} levels")


def _plan(node: Any, states: Sequence[_State], root: Any) -> tuple[list[_State] | None, dict]:
    """Apply the states' selectors to `node`'s children.

    Returns (sticky, per_child): `sticky` are the `..` states every container
    child inherits; `per_child` maps a selected child's key to
    [is a match, states active on it]."""
    is_dict = type(node) is dict
    per_child: dict = {}
    sticky: list[_State] | None = None
    for st in states:
        if st.sticky:
            sticky = [st] if sticky is None else sticky + [st]
        if is_dict:
            for name, edge in st.names.items():
                if name in node:
                    entry = per_child.get(name)
                    if entry is None:
                        per_child[name] = [edge.match, edge.states]
                    else:
                        entry[0] = entry[0] or edge.match
                        entry[1] = entry[1] + edge.states
        for kind, arg, edge in st.others:
            if kind == WILD:
                keys: Iterable = node.keys() if is_dict else range(len(node))
            elif kind == FILTER:  # applies to object members too (RFC 9535)
                keys = [k for k, v in (node.items() if is_dict else enumerate(node)) if arg(v, root)]
            elif is_dict:
                continue  # index and slice select from arrays only
            elif kind == INDEX:
                n = len(node)
                keys = [i % n for i in arg if -n <= i < n]
            else:
                keys = range(len(node))[arg]
            for k in keys:
                entry = per_child.get(k)
                if entry is None:
                    per_child[k] = [edge.match, edge.states]
                else:
                    entry[0] = entry[0] or edge.match
                    entry[1] = entry[1] + edge.states
    return sticky, per_child


def _names_only(states: Sequence[_State]) -> dict | None:
    """The common case worth a fast path: one plain state with only names."""
    if len(states) == 1:
        st = states[0]
        if not st.sticky and not st.others:
            return st.names
    return None


def _wild_only(states: Sequence[_State]) -> _Edge | None:
    """The other common case (`[*]` in `$.data[*].card`): one plain state whose
    only selector is a wildcard. Its children need no per-child plan."""
    if len(states) == 1:
        st = states[0]
        if not st.sticky and not st.names and len(st.others) == 1 and st.others[0][0] == WILD:
            return st.others[0][2]
    return None


def _find_in(node: Any, states: Sequence[_State], root: Any) -> list:
    out: list = []
    if type(node) is dict or type(node) is list:
        _collect(node, states, root, 0, out)
    return out


def _collect(node: Any, states: Sequence[_State], root: Any, depth: int, out: list) -> None:
    if depth > MAX_DEPTH:
        raise _too_deep()
    wild = _wild_only(states)
    if wild is not None:
        children = node.values() if type(node) is dict else node
        if wild.match:
            out.extend(children)
        sts = wild.states
        if sts:
            for child in children:
                tc = type(child)
                if tc is dict or tc is list:
                    _collect(child, sts, root, depth + 1, out)
        return
    sticky, per_child = _plan(node, states, root)
    for k, (match, sts) in per_child.items():
        child = node[k]
        if match:
            out.append(child)
        tc = type(child)
        if sts and not sticky and (tc is dict or tc is list):
            _collect(child, sts, root, depth + 1, out)
    if sticky:
        for k, child in node.items() if type(node) is dict else enumerate(node):
            tc = type(child)
            if tc is dict or tc is list:
                entry = per_child.get(k)
                _collect(child, sticky + list(entry[1]) if entry else sticky, root, depth + 1, out)


@functools.lru_cache(maxsize=4096)
def _matcher_of(path: JsonPath) -> Matcher:
    return compile_matcher([path])


def find(doc: Any, path: JsonPath | Matcher) -> list:
    """The values `path` selects in `doc`, each node once."""
    matcher = path if isinstance(path, Matcher) else _matcher_of(path)
    root_matched, states = matcher.start(doc)
    out = [doc] if root_matched else []
    if states and type(doc) in (dict, list):
        _collect(doc, states, doc, 0, out)
    return out


def retain(doc: Any, paths: Matcher | Sequence[JsonPath]) -> Any:
    """A new document with the matched nodes and their ancestors only.
    Matched nodes are shared with `doc`, not copied. With no match at all the
    result is an empty container of the root's type (None for a scalar root)."""
    matcher = paths if isinstance(paths, Matcher) else compile_matcher(paths)
    root_matched, states = matcher.start(doc)
    if root_matched:
        return doc
    kept = _retain(doc, states, doc, 0) if states and type(doc) in (dict, list) else MISSING
    if kept is MISSING:
        return {} if type(doc) is dict else [] if type(doc) is list else None
    return kept


def _retain(node: Any, states: Sequence[_State], root: Any, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise _too_deep()
    kept: dict = {}
    names = _names_only(states)
    if names is not None:
        if type(node) is dict:
            for name, edge in names.items():
                if name in node:
                    child = node[name]
                    if edge.match:
                        kept[name] = child
                    elif edge.states and (type(child) is dict or type(child) is list):
                        sub = _retain(child, edge.states, root, depth + 1)
                        if sub is not MISSING:
                            kept[name] = sub
    else:
        sticky, per_child = _plan(node, states, root)
        for k, (match, sts) in per_child.items():
            child = node[k]
            if match:
                kept[k] = child
            elif not sticky and sts and (type(child) is dict or type(child) is list):
                sub = _retain(child, sts, root, depth + 1)
                if sub is not MISSING:
                    kept[k] = sub
        if sticky:
            for k, child in node.items() if type(node) is dict else enumerate(node):
                tc = type(child)
                if (tc is dict or tc is list) and k not in kept:
                    entry = per_child.get(k)
                    sub = _retain(child, sticky + list(entry[1]) if entry else sticky, root, depth + 1)
                    if sub is not MISSING:
                        kept[k] = sub
    if not kept:
        return MISSING
    if type(node) is dict:
        if len(kept) == 1:
            return kept
        return {k: kept[k] for k in node if k in kept}  # the document's key order
    return [kept[i] for i in sorted(kept)]


def destroy(doc: Any, paths: Matcher | Sequence[JsonPath]) -> Any:
    """Remove every matched node, in place; returns `doc` (None if a path is `$`)."""
    matcher = paths if isinstance(paths, Matcher) else compile_matcher(paths)
    root_matched, states = matcher.start(doc)
    if root_matched:
        return None
    if not states or type(doc) not in (dict, list):
        return doc
    found: list[tuple[Any, list]] = []
    _removals(doc, states, doc, 0, found)
    for container, keys in found:  # all matches were found before anything moved
        if type(container) is dict:
            for k in keys:
                del container[k]
        elif len(keys) == 1:
            del container[keys[0]]
        else:
            drop = set(keys)
            container[:] = [v for i, v in enumerate(container) if i not in drop]
    return doc


def _removals(node: Any, states: Sequence[_State], root: Any, depth: int, found: list) -> None:
    if depth > MAX_DEPTH:
        raise _too_deep()
    names = _names_only(states)
    if names is not None:
        if type(node) is dict:
            drop = None
            for name, edge in names.items():
                if name in node:
                    if edge.match:
                        if drop is None:
                            drop = [name]
                        else:
                            drop.append(name)
                    elif edge.states:
                        child = node[name]
                        if type(child) is dict or type(child) is list:
                            _removals(child, edge.states, root, depth + 1, found)
            if drop:
                found.append((node, drop))
        return
    wild = _wild_only(states)
    if wild is not None:
        if wild.match:  # every child goes; nothing below needs a look
            if node:
                found.append((node, list(node) if type(node) is dict else list(range(len(node)))))
            return
        sts = wild.states
        if not sts:
            return
        children = node.values() if type(node) is dict else node
        names = _names_only(sts)
        if names is not None and all(e.match for e in names.values()):
            # `$.data[*].card`: a member removed from each object, no deeper look
            leaves = tuple(names)
            for child in children:
                if type(child) is dict:
                    if depth + 1 > MAX_DEPTH:
                        raise _too_deep()
                    drop = [n for n in leaves if n in child]
                    if drop:
                        found.append((child, drop))
            return
        for child in children:
            tc = type(child)
            if tc is dict or tc is list:
                _removals(child, sts, root, depth + 1, found)
        return
    sticky, per_child = _plan(node, states, root)
    drop = [k for k, entry in per_child.items() if entry[0]]
    if drop:
        found.append((node, drop))
    if sticky:
        for k, child in node.items() if type(node) is dict else enumerate(node):
            tc = type(child)
            if tc is dict or tc is list:
                entry = per_child.get(k)
                if entry is None:
                    _removals(child, sticky, root, depth + 1, found)
                elif not entry[0]:
                    _removals(child, sticky + list(entry[1]), root, depth + 1, found)
    else:
        for k, (match, sts) in per_child.items():
            if not match and sts:
                child = node[k]
                if type(child) is dict or type(child) is list:
                    _removals(child, sts, root, depth + 1, found)
