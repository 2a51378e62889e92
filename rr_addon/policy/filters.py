"""Response filters (docs/policy.md: filters): `{retain: [paths]}` and `{destroy: [paths]}`.

An entry may carry both: it retains first, then destroys within what is left.
Entries run in list order, each on the previous output, and the four scopes
stack in the fixed order target credential -> target -> proxy credential ->
proxy (`stack`). Paths are compiled when the configuration is compiled; the
array semantics are documented in `rr_addon.policy.jsonpaths`.

Documents are changed in place where that is cheaper (destroy) and shared
where possible (retain keeps matched subtrees without copying): pass a freshly
parsed document and use only the returned value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from rr_addon.policy.jsonpaths import JsonPath, JsonPathError, Matcher, compile_matcher, compile_path, destroy, retain

SCOPE_ORDER = ("target_credential", "target", "proxy_credential", "proxy")


@dataclass(frozen=True, slots=True)
class Filter:
    retain: tuple[JsonPath, ...] = ()
    destroy: tuple[JsonPath, ...] = ()
    # each list compiled to one automaton, so all its paths share one traversal
    _keep: Matcher | None = field(default=None, init=False, repr=False, compare=False)
    _drop: Matcher | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_keep", compile_matcher(self.retain) if self.retain else None)
        object.__setattr__(self, "_drop", compile_matcher(self.destroy) if self.destroy else None)

    def apply(self, doc: Any) -> Any:
        if self._keep is not None:
            doc = retain(doc, self._keep)
        if self._drop is not None:
            doc = destroy(doc, self._drop)
        return doc


def compile_filter(retain_paths: Iterable[str] | None = None, destroy_paths: Iterable[str] | None = None) -> Filter:
    """Raises JsonPathError naming the bad path."""
    keep = tuple(compile_path(p) for p in retain_paths or ())
    drop = tuple(compile_path(p) for p in destroy_paths or ())
    for p in drop:
        if p.is_root:
            raise JsonPathError(f"destroy {p.text!r} would remove the whole response")
    if not keep and not drop:
        raise JsonPathError("a filter needs 'retain' or 'destroy' paths")
    return Filter(keep, drop)


def compile_filters(entries: Iterable[Any]) -> tuple[Filter, ...]:
    """Compile `filters:` entries (objects with `.retain` / `.destroy` lists)."""
    return tuple(compile_filter(e.retain, e.destroy) for e in entries)


def stack(
    target_credential: Sequence[Filter] = (),
    target: Sequence[Filter] = (),
    proxy_credential: Sequence[Filter] = (),
    proxy: Sequence[Filter] = (),
) -> tuple[Filter, ...]:
    """The filters of the four scopes in the order they run (SCOPE_ORDER)."""
    return (*target_credential, *target, *proxy_credential, *proxy)


def apply_filters(doc: Any, filters: Sequence[Filter]) -> Any:
    for f in filters:
        doc = f.apply(doc)
    return doc
