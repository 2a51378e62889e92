"""Request-path conditions (`path:` of rules, of a meter's `when`, of `validate:`).

Four forms, each compiled to one RE2 pattern so a scope's paths still run as
one RE2::Set (rr_addon.core.rules.PatternSet), whatever the forms:

    path: {prefix: /v1/charges}      # /v1/charges and everything below it
    path: {glob: "/v1/charges/*"}    # `*` within one segment, `**` across segments
    path: {regex: "/v1/charges/ch_[a-z0-9]+"}   # RE2, must match the WHOLE path
    path: "^/v1/charges"             # the original form: RE2 *search* (unanchored)

Paths are matched against the canonical request path (rr_addon.policy.paths):
no query string, dot segments resolved, repeated slashes collapsed, unreserved
escapes decoded. A prefix or glob must be written in that canonical form, so
what it names is what it matches.
"""

from __future__ import annotations

from typing import Annotated, Literal

import re2
from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from rr_addon.policy.base import Model
from rr_addon.policy.regex import check_re2
from rr_addon.policy.paths import PathError, canonicalize

Presence = Literal["present", "absent"]
Regex = Annotated[str, AfterValidator(check_re2)]
FORMS = ("prefix", "glob", "regex", "pattern")


def glob_re2(glob: str) -> str:
    """`*` matches within one segment (no `/`), `**` any run of characters; the rest is literal."""
    out, i = ["^"], 0
    while i < len(glob):
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        else:
            out.append(re2.escape(glob[i]))
            i += 1
    out.append("$")
    return "".join(out)


def prefix_re2(prefix: str) -> str:
    """A prefix ending in `/` matches what is below it; otherwise it is a whole
    segment: `/v1/charges` matches `/v1/charges` and `/v1/charges/…`, never
    `/v1/chargesbacks`."""
    if prefix.endswith("/"):
        return "^" + re2.escape(prefix)
    return "^" + re2.escape(prefix) + "(?:/|$)"


def _canonical(form: str, text: str) -> None:
    if not text.startswith("/"):
        raise ValueError(f"a path {form} starts with '/' (paths are matched without scheme and host): {text!r}")
    if "?" in text:
        raise ValueError(f"{form} {text!r}: paths are matched without the query string; match it with 'query'")
    try:
        canonical = canonicalize(text).path
    except PathError as e:
        raise ValueError(f"{form} {text!r} is not a path rr forwards: {e}") from None
    if canonical != text:
        raise ValueError(f"{form} {text!r} would never match: rules see the canonical path, so write {canonical!r}")


class PathSpec(Model):
    """Which request paths apply. Give exactly one of `prefix`, `glob`, `regex`
    or `pattern`; a plain string (`path: "^/v1/"`) is short for `{pattern: …}`."""

    prefix: str | None = Field(
        default=None,
        description="A path prefix, whole segments only: `/v1/charges` matches `/v1/charges` and `/v1/charges/ch_1`, "
        "not `/v1/chargesbacks`; end it with `/` to match only what is below (`/v1/charges/`).",
        examples=["/v1/charges"],
    )
    glob: str | None = Field(
        default=None,
        description="A glob on the whole path: `*` matches within one segment (no `/`), `**` matches across segments; "
        "everything else is literal. `/v1/charges/*` matches `/v1/charges/ch_1`, not `/v1/charges/ch_1/refunds`.",
        examples=["/v1/charges/*", "/repos/**"],
    )
    regex: Regex | None = Field(
        default=None,
        description="An RE2 regular expression that must match the WHOLE path (implicitly anchored at both ends).",
        examples=["/v1/charges/ch_[A-Za-z0-9]+"],
    )
    pattern: Regex | None = Field(
        default=None,
        description="The original form: an RE2 regular expression SEARCHED anywhere in the path, so anchor it "
        "(`^/v1/charges/`) or prefer `prefix`, `glob` or `regex`. `rr apply` warns about unanchored allow patterns "
        "and patterns that look like globs.",
        examples=["^/v1/charges/"],
    )

    @model_validator(mode="after")
    def _one_form(self) -> PathSpec:
        given = [f for f in FORMS if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError("a path needs exactly one of 'prefix', 'glob', 'regex' or 'pattern'" + (f" (got {', '.join(given)})" if given else ""))
        return self

    @field_validator("prefix", "glob")
    @classmethod
    def _path_text(cls, text: str, info: ValidationInfo) -> str:
        _canonical(info.field_name, text)
        return text

    @property
    def form(self) -> str:
        return next(f for f in FORMS if getattr(self, f) is not None)

    @property
    def text(self) -> str:
        return getattr(self, self.form)

    def re2(self) -> str:
        """The one RE2 pattern (search semantics) this condition compiles to."""
        form, text = self.form, self.text
        if form == "prefix":
            return prefix_re2(text)
        if form == "glob":
            return glob_re2(text)
        if form == "regex":
            return f"^(?:{text})$"
        return text

    def describe(self) -> str:
        """How `rr explain` names the condition: `glob '/v1/charges/*'`."""
        how = {"prefix": "prefix", "glob": "glob", "regex": "full-match regex", "pattern": "regex search"}[self.form]
        return f"{how} {self.text!r}"

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: object) -> object:
        # A bare string is the pattern; checking it here puts the error on `path` itself.
        return {"pattern": check_re2(value)} if isinstance(value, str) else value


class PathMatch(PathSpec):
    """A rule's `path`: one path form, plus `presence: absent` to match paths it does NOT match."""

    presence: Presence = Field(default="present", description="`absent`: the rule applies to paths this condition does not match.")
