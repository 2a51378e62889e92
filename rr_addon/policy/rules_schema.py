"""Access rules (docs/policy.md: rules) as pydantic models.

A rule matches a request when every field it sets matches. Every regex is RE2
syntax with search semantics (a path's `regex` form: a full match) and is
compiled here, at validation time, so a pattern RE2 cannot run (back-references, look-around) is refused by `rr apply`
with the rule and the field named, never discovered per request.

Choices the contract leaves open:
- Case-insensitivity is `ignore_case: true` on the rule (applies to every regex
  of the rule); `(?i)` inside one pattern works too. Header *names* are always
  matched case-insensitively (HTTP header names are).
- `path` is one of the forms of rr_addon.policy.paths_schema (`prefix`, `glob`,
  full-match `regex`, or the original RE2-search `pattern`, which a plain string
  is short for), plus `presence: absent`: the path must not match.
- `body` entries are `{json_path, value?, presence?}` on a JSON or form body, or
  `{pattern, presence?}` on the raw body text.
- `claims` entries name a top-level claim; `value` is optional (presence only).
- An empty pattern is refused (it matches everything: omit the field instead).
- `mcp` reads the body as JSON-RPC 2.0 (rr_addon.core.mcp says what counts as
  a call and how batches are read).
- `effect: approve` holds a matching request until a person decides
  (docs/approvals.md); `approval` (timeout, optional notify webhook) goes with
  it and only with it. `default_effect` stays allow | deny: a scope cannot hold
  every request by default.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from rr_addon.policy.base import HEADER_RE, Model, Name, _name, unique_names
from rr_addon.policy.paths_schema import PathMatch
from rr_addon.policy.regex import check_re2, re2_options  # noqa: F401  (re2_options: imported from here by core.rules)
from rr_addon.policy.jsonpaths import compile_path

Presence = Literal["present", "absent"]
RuleEffect = Literal["allow", "deny", "approve"]

MAX_APPROVAL_TIMEOUT = 3600  # seconds: a held request keeps a client connection open


def _check_json_path(text: str) -> str:
    # The one JSONPath dialect of rules, meters, filters and validation
    # (rr_addon.policy.jsonpaths); JsonPathError is a ValueError, reported on the field.
    compile_path(text)
    return text


Regex = Annotated[str, AfterValidator(check_re2)]
JsonPath = Annotated[str, AfterValidator(_check_json_path)]


class HeaderMatch(Model):
    """Some header whose name matches `name` has a value matching `value`."""

    name: Regex
    value: Regex | None = None
    presence: Presence = "present"


class QueryMatch(HeaderMatch):
    """Like HeaderMatch, on the decoded query parameters."""


class BodyMatch(Model):
    """A condition on the request body: a JSONPath (with an optional value regex) or a regex on the raw text."""

    json_path: JsonPath | None = Field(
        default=None,
        description="A JSONPath in rr's one dialect (as in filters and meters): exact number comparisons, `=~` is RE2. "
        "The body is read as JSON whatever its Content-Type; a form body as `{name: [values]}`.",
        examples=["$.model", "$.messages[?(@.role == \"system\")]"],
    )
    pattern: Regex | None = Field(default=None, description="An RE2 regex searched in the raw body text (instead of `json_path`).")
    value: Regex | None = Field(
        default=None,
        description="An RE2 regex (search) that some selected node must match: strings as they are, numbers as the body spells "
        "them, other values as compact JSON. Without it the condition is that the path selects something.",
        examples=["^gpt-4o-mini$"],
    )
    presence: Presence = Field(default="present", description="`absent`: the condition holds when the path selects nothing (or no node matches `value`).")

    @model_validator(mode="after")
    def _one_kind(self) -> BodyMatch:
        if (self.json_path is None) == (self.pattern is None):
            raise ValueError("a body matcher needs exactly one of 'json_path' or 'pattern'")
        if self.pattern is not None and self.value is not None:
            raise ValueError("'value' goes with 'json_path'; a 'pattern' matches the raw body itself")
        return self


class McpArgumentMatch(Model):
    """A condition on a JSON-RPC call's `params.arguments`."""

    json_path: JsonPath = Field(
        description="A JSONPath into `params.arguments` (rr's one dialect, as in `body`).", examples=["$.path", "$.query"]
    )
    value: Regex | None = Field(
        default=None,
        description="An RE2 regex (search) the selected nodes must match: for a deny rule some node, for an allow rule every "
        "node (and at least one). Without it the condition is that the path selects something.",
        examples=["^/etc/"],
    )
    presence: Presence = Field(default="present", description="`absent`: the condition holds when no selected node matches.")


class McpMatch(Model):
    """A condition on a JSON-RPC 2.0 request body (MCP over streamable HTTP): one call or a batch."""

    method: Regex | None = Field(default=None, description="An RE2 regex (search) on the call's `method`.", examples=["^tools/call$"])
    tool: Regex | None = Field(default=None, description="An RE2 regex (search) on `params.name` (the MCP tool).", examples=["^(delete|drop)_"])
    arguments: list[McpArgumentMatch] = Field(default_factory=list, description="Conditions on `params.arguments`; all must hold.")

    @model_validator(mode="after")
    def _something(self) -> McpMatch:
        if self.method is None and self.tool is None and not self.arguments:
            raise ValueError("an mcp condition needs 'method', 'tool' or 'arguments' (to match any JSON-RPC body, use method: \".\")")
        return self


class ClaimMatch(Model):
    claim: str = Field(min_length=1)
    value: Regex | None = None
    presence: Presence = "present"


class Match(Model):
    """The match fields of a rule (also usable for a meter's `when`)."""

    methods: list[str] | None = None
    path: PathMatch | None = Field(
        default=None,
        description="Which request paths: `{prefix: …}`, `{glob: …}`, `{regex: …}` (full match) or the original RE2-search "
        "string. Omit to match every path.",
    )
    headers: list[HeaderMatch] = Field(default_factory=list)
    query: list[QueryMatch] = Field(default_factory=list)
    body: list[BodyMatch] = Field(default_factory=list)
    claims: list[ClaimMatch] = Field(default_factory=list)
    mcp: McpMatch | None = Field(
        default=None,
        description="The request body is JSON-RPC 2.0 (an MCP message, or a batch) whose calls match. A deny rule matches if "
        "any call of a batch matches, an allow rule only if every call does. A body that is not JSON-RPC never matches; one "
        "rr cannot read as JSON, or a batch of more than 64 messages, matches every deny rule and no allow rule.",
    )
    ignore_case: bool = False

    @field_validator("methods")
    @classmethod
    def _methods(cls, methods: list[str] | None) -> list[str] | None:
        if methods is None:
            return None
        if not methods:
            raise ValueError("an empty list matches no method; omit 'methods' to match any")
        out: list[str] = []
        for m in methods:
            if not HEADER_RE.match(m):  # a method is an RFC 9110 token
                raise ValueError(f"{m!r} is not an HTTP method")
            if m.upper() not in out:
                out.append(m.upper())
        return out



class Notify(Model):
    """Where a held request is announced: one JSON POST with a Slack-compatible `text`."""

    url: str = Field(description="https, or plain http to a loopback address.", examples=["https://hooks.example.com/rr"])

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        from rr_addon.policy.identity import check_endpoint_url

        return check_endpoint_url(value)


class Approval(Model):
    """How long a held request waits for a person, and whom to tell."""

    timeout: int = Field(default=300, ge=1, le=MAX_APPROVAL_TIMEOUT, strict=True, description="Seconds; then 403 `approval-timeout`.")
    notify: Notify | None = None


class Rule(Match):
    name: Name
    effect: RuleEffect
    priority: int = Field(default=500, ge=0, le=1000, strict=True)
    description: str | None = None
    approval: Approval | None = None

    _check_name = field_validator("name")(lambda cls, v: _name(v))

    @model_validator(mode="after")
    def _approval_goes_with_approve(self) -> Rule:
        if self.approval is not None and self.effect != "approve":
            raise ValueError(f"'approval' goes with effect: approve (this rule's effect is {self.effect})")
        return self

    @property
    def hold(self) -> Approval:
        """The approval settings of an approve rule (the defaults when it sets none)."""
        return self.approval if self.approval is not None else Approval()


# The type of a scope's `rules:` field: names are unique within one scope.
RuleList = Annotated[list[Rule], AfterValidator(unique_names("rule"))]
