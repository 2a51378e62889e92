"""`filters:`, `redact:` and `validate:` entries (docs/policy.md: filters, redact, validate) as pydantic models.

Everything that can fail is compiled here, at validation time, so `rr apply`
refuses a bad path, regex or schema with the entry and field named:
JSONPaths (jsonpath-ng syntax, compiled once and cached), custom redaction
patterns (RE2: no look-around, no back-references), JSON Schemas (draft
2020-12, local `$ref` only).

    filters:
      - destroy: ["$.data[*].card"]
      - retain: ["$.data[*].id", "$.object"]     # an entry may have both: retain, then destroy
    redact:
      - detectors: [email, credit_card, secret, {custom: "EMP-[0-9]{6}", name: employee_id}]
        action: mask                             # mask | hash
        direction: response                      # response | request | both
    validate:
      - max_body_bytes: 1048576
        content_types: [application/json]
      - methods: [POST]
        path: "^/v1/charges$"
        json_schema: {type: object, required: [amount]}
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, Discriminator, Field, Tag, field_validator, model_validator

from rr_addon.policy.base import HEADER_RE, Model
from rr_addon.policy.paths_schema import PathSpec
from rr_addon.policy.filters import compile_filter
from rr_addon.policy.jsonpaths import compile_path
from rr_addon.policy.redact import BUILTIN, check_custom_pattern
from rr_addon.policy.validation import compile_schema


def _json_path(text: str) -> str:
    compile_path(text)  # JsonPathError is a ValueError: pydantic reports it on the field
    return text


JsonPathText = Annotated[str, AfterValidator(_json_path)]


class FilterEntry(Model):
    retain: list[JsonPathText] | None = Field(
        default=None, min_length=1, description="JSONPaths to keep (with their ancestors); everything else is dropped.", examples=[["$.data[*].id"]]
    )
    destroy: list[JsonPathText] | None = Field(
        default=None, min_length=1, description="JSONPaths to remove (after `retain`).", examples=[["$.data[*].card"]]
    )
    description: str | None = None

    @model_validator(mode="after")
    def _some_paths(self) -> FilterEntry:
        compile_filter(self.retain, self.destroy)  # refuses an entry without paths and destroy "$"
        return self


DetectorName = Literal["email", "phone", "credit_card", "iban", "us_ssn", "ip_address", "secret"]
_LABEL_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class CustomDetector(Model):
    custom: str
    name: str | None = None  # shown as [REDACTED:NAME] and counted under it; default "custom"

    _check_custom = field_validator("custom")(lambda cls, v: check_custom_pattern(v))

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not _LABEL_RE.match(v):
            raise ValueError("a detector name is 1-32 lower-case letters, digits or '_', starting with a letter")
        if v in BUILTIN or v == "custom":
            raise ValueError(f"{v!r} is a built-in detector name")
        return v


# A detector is a built-in name or a {custom: ...} mapping; routing on the
# input's type keeps pydantic from reporting both alternatives' errors.
DetectorSpec = Annotated[
    Union[Annotated[DetectorName, Tag("builtin-detector")], Annotated[CustomDetector, Tag("custom-detector")]],
    Discriminator(lambda v: "builtin-detector" if isinstance(v, str) else "custom-detector"),
]


class RedactEntry(Model):
    detectors: list[DetectorSpec] = Field(min_length=1)
    action: Literal["mask", "hash"] = "mask"
    direction: Literal["response", "request", "both"] = "response"
    description: str | None = None


class ValidateEntry(Model):
    methods: list[str] | None = Field(default=None, min_length=1)
    path: PathSpec | None = Field(
        default=None, description="Which request paths this entry checks, in the path forms of rules (`prefix`, `glob`, `regex`, `pattern`)."
    )
    max_body_bytes: int | None = Field(default=None, gt=0, strict=True)
    content_types: list[str] | None = Field(default=None, min_length=1)
    json_schema: dict[str, Any] | bool | None = None
    description: str | None = None

    @field_validator("methods")
    @classmethod
    def _methods(cls, methods: list[str] | None) -> list[str] | None:
        for m in methods or ():
            if not HEADER_RE.match(m):
                raise ValueError(f"{m!r} is not an HTTP method")
        return [m.upper() for m in methods] if methods else methods

    @field_validator("content_types")
    @classmethod
    def _types(cls, types: list[str] | None) -> list[str] | None:
        for t in types or ():
            kind, _, sub = t.partition("/")
            if not kind or not sub or ";" in t or not HEADER_RE.match(kind) or not HEADER_RE.match(sub):
                raise ValueError(f"{t!r} is not a media type (type/subtype, type/* or */*)")
            if kind == "*" and sub != "*":
                raise ValueError(f"{t!r}: only */* may have a wildcard type")
        return [t.lower() for t in types] if types else types

    @field_validator("json_schema")
    @classmethod
    def _schema(cls, v: Any) -> Any:
        if v is not None:
            compile_schema(v)
        return v

    @model_validator(mode="after")
    def _some_check(self) -> ValidateEntry:
        if self.max_body_bytes is None and self.content_types is None and self.json_schema is None:
            raise ValueError("a validate entry needs max_body_bytes, content_types or json_schema")
        return self


# The field types the lead adds to targets, proxies and their credentials.
FilterList = list[FilterEntry]
RedactList = list[RedactEntry]
ValidateList = list[ValidateEntry]
