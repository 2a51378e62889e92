"""Warnings about path conditions that probably do not mean what they say.

The original path form (`path: "…"` or `{pattern: …}`) is an RE2 *search*, kept
so existing policies work. Two ways it misleads, reported by `rr apply`:
- a pattern that looks like a glob (`/v1/charges*`): as a regex it allows
  `/v1/charge`, `/x/v1/charges` and `/v1/chargesbacks/delete`;
- an allow rule whose pattern is not anchored with `^`: it allows any path
  that merely contains it (`/v1/charges` also allows `/x/v1/charges`).
Each warning carries the rewrite in one of the explicit forms. Warnings, not
errors: the configuration stays valid; the user decides.
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator

from rr_addon.config.load import ConfigError, Source
from rr_addon.policy.paths_schema import PathSpec
from rr_addon.policy.schema import Config

# `*` right after a path character: glob habit, not regex (`.*`, `)*`, `]*` are regex).
_GLOB_STAR = re.compile(r"[A-Za-z0-9/_~-]\*")
_REGEX_SYNTAX = re.compile(r"[\\^$+?()\[\]{}|]")


def looks_like_glob(pattern: str) -> bool:
    return bool(_GLOB_STAR.search(pattern)) and not _REGEX_SYNTAX.search(pattern)


def _anchored(pattern: str) -> bool:
    return re.sub(r"^\(\?[a-zA-Z]+\)", "", pattern).startswith("^")


def path_message(path: PathSpec, allow: bool) -> str | None:
    """The warning for one path condition, or None."""
    if path.form != "pattern":
        return None
    p = path.pattern
    assert p is not None
    if looks_like_glob(p):
        glob = p if p.startswith("/") else "/**" + p
        fixes = f"`path: {{glob: {glob!r}}}` (`*` within a segment, `**` across)"
        stem = p.split("*", 1)[0]
        if p.startswith("/") and stem.rstrip("/") and p.rstrip("*") == stem:
            fixes += f" or `path: {{prefix: {stem.rstrip('/')!r}}}` (that path and everything below it)"
        return (
            f"path {p!r} looks like a glob but is an RE2 search: it matches anywhere in the path and `*` repeats "
            f"the character before it (so it also matches e.g. {_surprise(p)!r}). Write {fixes}; "
            f"write `{{pattern: …}}` only if you mean the regex."
        )
    if allow and not _anchored(p):
        plain = p.startswith("/") and not _REGEX_SYNTAX.search(p)
        if plain:
            fixes = f"`path: {{prefix: {p!r}}}` or `path: {{regex: {p!r}}}` (a full match)"
        elif p.startswith("/"):
            fixes = f"`path: {{regex: {p!r}}}` (a full match)"
        else:
            fixes = "a `regex` (a full match) starting with '/'"
        example = f", e.g. '/x{p}'" if plain else ""
        return (
            f"allow rule path {p!r} is an unanchored RE2 search: it allows every path that merely contains a match{example}. "
            f"Write {fixes}, or anchor the pattern with '^'."
        )
    return None


def _surprise(pattern: str) -> str:
    """A path the glob-looking regex matches that its author did not mean."""
    literal = re.sub(r".\*", "", pattern)  # `x*` also matches zero x's
    return "/x" + (literal if literal.startswith("/") else "/" + literal)


def path_warnings(config: Config, source: Source) -> list[ConfigError]:
    out: list[ConfigError] = []
    for section, name, field, rest, path, allow in _paths(config):
        message = path_message(path, allow)
        if message is not None:
            out.append(ConfigError(source.file_of(section, name), f"{section}[{name}].{field}", message, source.line_of(section, name, rest)))
    return out


def _rule_paths(prefix: str, rest: tuple, rules: Iterable) -> Iterator[tuple]:
    for i, r in enumerate(rules):
        if r.path is not None:
            yield f"{prefix}rules[{r.name}].path", (*rest, "rules", i, "path"), r.path, r.effect == "allow"


def _validate_paths(prefix: str, rest: tuple, entries: Iterable) -> Iterator[tuple]:
    for i, v in enumerate(entries):
        if v.path is not None:
            yield f"{prefix}validate[{i}].path", (*rest, "validate", i, "path"), v.path, False


def _paths(config: Config) -> Iterator[tuple]:
    """(section, object name, field, line-lookup path, PathSpec, is an allow rule) of every path condition."""
    for t in config.targets:
        for found in (*_rule_paths("", (), t.rules), *_validate_paths("", (), t.validate_)):
            yield ("targets", t.name, *found)
        for ci, c in enumerate(t.credentials):
            for found in _rule_paths(f"credentials[{c.name}].", ("credentials", ci), getattr(c, "rules", ())):
                yield ("targets", t.name, *found)
    for p in config.proxies:
        for found in (*_rule_paths("", (), p.rules), *_validate_paths("", (), p.validate_)):
            yield ("proxies", p.name, *found)
        for ci, c in enumerate(p.credentials):
            for found in _rule_paths(f"credentials[{c.name}].", ("credentials", ci), getattr(c, "rules", ())):
                yield ("proxies", p.name, *found)
        for mi, m in enumerate(p.meters):
            if m.when is not None and m.when.path is not None:
                yield ("proxies", p.name, f"meters[{m.name}].when.path", ("meters", mi, "when", "path"), m.when.path, False)
