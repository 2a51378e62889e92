"""JSON-RPC 2.0 request bodies as the `mcp` rule condition reads them (MCP over
streamable HTTP: docs/ai.md). Pure: no I/O.

What counts as a message — read as a lenient server would, so a body cannot slip
past a deny rule by being sloppier than the server accepts:
- The body (parsed by the rules, whatever its Content-Type; repeated keys and
  keys differing only in case are refused before this point) is one object, or
  a non-empty array of them (a batch). An object is a JSON-RPC message if it has
  a `method` or a `jsonrpc` member; `"jsonrpc": "2.0"` itself is not required.
  Member names are looked up case-insensitively (`Method`, `Params`, `Name`):
  some servers' decoders do, and rr has already refused two names that fold alike.
- A call's method is `method` when it is a string; its tool `params.name` when
  that is a string; its arguments `params.arguments`. A batch element that is not
  an object, or has no string method (a response the client sends back, or
  garbage), is a call with no method: it matches no `method` or `tool` pattern.

How a rule reads it (`Condition.holds`):
- any matching call is enough for a deny rule (and a meter's `when`); an allow
  rule needs every call of a batch to match.
- a body that is not JSON-RPC (JSON of another shape, no body) never matches.
- a non-empty body rr cannot read as JSON, and a batch of more than MAX_BATCH
  messages, match every deny rule and no allow rule: rr cannot vouch for what
  the server makes of them (fail closed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import re2

from rr_addon.policy.regex import re2_options
from rr_addon.policy.jsonpaths import JsonPath, compile_path, find

MAX_BATCH = 64
AUDIT_CHARS = 256  # of the method and tool names an audit record keeps

_OPTIONS = re2_options()


@dataclass(frozen=True, slots=True)
class Call:
    method: str | None  # None: not a request or notification (a response, or malformed)
    tool: str | None  # params.name, when a string
    arguments: Any = None  # params.arguments, as parsed

    def describe(self) -> str:
        if self.method is None:
            return "(no method)"
        return self.method + (f" {self.tool}" if self.tool is not None else "")


class Unreadable:
    """A body the condition cannot vouch for: not JSON, or a batch over MAX_BATCH."""

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why


Calls = tuple[Call, ...] | Unreadable | None  # None: not JSON-RPC


def _member(obj: dict, name: str) -> Any:
    if name in obj:
        return obj[name]
    for key, value in obj.items():
        if type(key) is str and key.casefold() == name:
            return value
    return None


def _call(item: Any) -> Call:
    if type(item) is not dict:
        return Call(None, None)
    method = _member(item, "method")
    if type(method) is not str:
        return Call(None, None)
    params = _member(item, "params")
    if type(params) is not dict:
        return Call(method, None)
    name = _member(params, "name")
    return Call(method, name if type(name) is str else None, _member(params, "arguments"))


def _message(item: Any) -> bool:
    return type(item) is dict and (_member(item, "method") is not None or _member(item, "jsonrpc") is not None)


def calls(doc: Any, *, opaque: bool = False) -> Calls:
    """The calls of a parsed body; `opaque`: a non-empty body that did not parse as JSON."""
    if opaque:
        return Unreadable("the body is not JSON")
    if type(doc) is dict:
        return (_call(doc),) if _message(doc) else None
    if type(doc) is list and doc and any(_message(item) for item in doc):
        if len(doc) > MAX_BATCH:
            return Unreadable(f"a batch of {len(doc)} messages (more than {MAX_BATCH})")
        return tuple(_call(item) for item in doc)
    return None


def describe(found: Calls) -> str:
    """`rr explain`'s line for what the body holds."""
    if found is None:
        return "the body is not JSON-RPC"
    if isinstance(found, Unreadable):
        return found.why
    return ", ".join(c.describe() for c in found) if len(found) > 1 else found[0].describe()


# --------------------------------------------------------------------------
# The compiled condition


def _regex(pattern: str | None, ignore_case: bool) -> Callable[[str], bool] | None:
    if pattern is None:
        return None
    rx = re2.compile(("(?i)" if ignore_case else "") + pattern, _OPTIONS)
    return lambda text: rx.search(text) is not None


@dataclass(frozen=True, slots=True)
class _Argument:
    path: JsonPath
    value: Callable[[str], bool] | None
    absent: bool

    def holds(self, arguments: Any, strict: bool, render: Callable[[Any], list[str]]) -> bool:
        """`strict` (an allow rule reading `present`, a deny rule reading `absent`): every node must match."""
        nodes = find(arguments, self.path) if isinstance(arguments, (dict, list)) else []
        if self.value is None:
            found = bool(nodes)
        else:
            texts = [t for n in nodes for t in render(n)]
            want = self.value
            found = bool(texts) and all(map(want, texts)) if strict else any(map(want, texts))
        return found != self.absent


@dataclass(frozen=True, slots=True)
class Condition:
    method: Callable[[str], bool] | None
    tool: Callable[[str], bool] | None
    arguments: tuple[_Argument, ...]
    allow: bool  # an allow rule: every call must match; else any call is enough

    def call_matches(self, call: Call, render: Callable[[Any], list[str]]) -> bool:
        if self.method is not None and (call.method is None or not self.method(call.method)):
            return False
        if self.tool is not None and (call.tool is None or not self.tool(call.tool)):
            return False
        if (self.method is None and self.tool is None) and call.method is None:
            return False  # an arguments-only condition is still about calls
        allow = self.allow
        return all(a.holds(call.arguments, allow != a.absent, render) for a in self.arguments)

    def holds(self, found: Calls, render: Callable[[Any], list[str]]) -> bool:
        if found is None:
            return False
        if isinstance(found, Unreadable):
            return not self.allow
        if self.allow:
            return all(self.call_matches(c, render) for c in found)
        return any(self.call_matches(c, render) for c in found)

    def note(self, found: Calls, render: Callable[[Any], list[str]]) -> str:
        """`rr explain`'s reading of the condition on this body."""
        if found is None or isinstance(found, Unreadable):
            return f"mcp: {describe(found)}"
        parts = [f"{c.describe()} {'matched' if self.call_matches(c, render) else 'did not match'}" for c in found]
        return "mcp: " + "; ".join(parts)


def compile_condition(match: Any, *, allow: bool, ignore_case: bool) -> Condition:
    """`match` is a validated `McpMatch` (rr_addon.policy.rules_schema)."""
    args = tuple(_Argument(compile_path(a.json_path), _regex(a.value, ignore_case), a.presence == "absent") for a in match.arguments)
    return Condition(_regex(match.method, ignore_case), _regex(match.tool, ignore_case), args, allow)


def summary(found: Calls) -> tuple[str | None, str | None]:
    """The audit record's (method, tool): the first call's, or the batch's joined by ','."""
    if found is None or isinstance(found, Unreadable) or not found:
        return None, None
    methods = ",".join(c.method for c in found if c.method is not None)
    tools = ",".join(c.tool for c in found if c.tool is not None)
    # caller-chosen text: bounded (the audit record is not a place to store bodies)
    return (methods[:AUDIT_CHARS] or None), (tools[:AUDIT_CHARS] or None)



def audit_fields(doc: Any) -> dict[str, str]:
    """The audit record's `mcp_method` and `mcp_tool` for a parsed body (empty if not JSON-RPC):
    a batch's methods and tools joined by ','."""
    method, tool = summary(calls(doc))
    return {k: v for k, v in (("mcp_method", method), ("mcp_tool", tool)) if v is not None}
