"""`meters:` entries of a proxy (docs/policy.md: meters) as pydantic models.

    - name: tokens
      type: response_value           # or request_count (the default)
      response_value: {json_path: "$.usage.total_tokens"}   # or {header: x-tokens}
      limits: {day: 100000}          # any of minute/hour/day/month; none = track only
      per: credential                # proxy (default) | credential
      when: {methods: [POST]}        # rule match syntax, compiled by the rules module
      timezone: Europe/Berlin        # IANA name; windows are UTC by default
      on_backend_error: deny         # deny (default) | allow, when counters are unreachable

`type: {response_value: {json_path: …}}` is accepted too and normalised to the above.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from rr_addon.policy.base import Model, _header_name, _name, unique_names
from rr_addon.policy.rules_schema import Match
from rr_addon.policy.jsonpaths import compile_path
from rr_addon.policy.windows import KINDS, zone


class JsonPathValue(Model):
    json_path: str = Field(
        min_length=1,
        description="A JSONPath (rr's one dialect, as in rules and filters) to a number in the response JSON, or in "
        "each `data:` event of a streamed answer (the last event where it matches gives the value).",
        examples=["$.usage.total_tokens"],
    )

    @field_validator("json_path")
    @classmethod
    def _parses(cls, v: str) -> str:
        compile_path(v)  # JsonPathError is a ValueError: reported on the field
        return v


class HeaderValue(Model):
    header: str

    _check = field_validator("header")(lambda cls, v: _header_name(v).lower())


class Limits(Model):
    minute: int | None = Field(default=None, ge=0)
    hour: int | None = Field(default=None, ge=0)
    day: int | None = Field(default=None, ge=0)
    month: int | None = Field(default=None, ge=0)

    def by_kind(self) -> tuple[int | None, ...]:
        """Limits aligned with `windows.KINDS`."""
        return tuple(getattr(self, k) for k in KINDS)


class MeterSpec(Model):
    name: str
    type: Literal["request_count", "response_value"] = "request_count"
    response_value: JsonPathValue | HeaderValue | None = None
    limits: Limits = Field(default_factory=Limits)
    per: Literal["proxy", "credential"] = "proxy"
    when: Match | None = None  # the rule match syntax: which requests the meter counts
    timezone: str = "UTC"
    on_backend_error: Literal["deny", "allow"] = "deny"
    description: str | None = None

    _check_name = field_validator("name")(lambda cls, v: _name(v))

    @field_validator("limits", mode="before")
    @classmethod
    def _no_limits(cls, v: Any) -> Any:
        return {} if v is None else v  # a bare `limits:` in YAML: track only

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        zone(v)
        return v

    @model_validator(mode="before")
    @classmethod
    def _nested_type(cls, data: Any) -> Any:
        # `type: {response_value: {...}}` -> `type: response_value, response_value: {...}`
        if isinstance(data, dict) and isinstance(data.get("type"), dict):
            nested = data["type"]
            if list(nested) != ["response_value"]:
                raise ValueError("type is request_count, response_value, or {response_value: {json_path|header: ...}}")
            if "response_value" in data:
                raise ValueError("response_value given twice")
            data = {**data, "type": "response_value", "response_value": nested["response_value"]}
        if isinstance(data, dict) and "type" not in data and "response_value" in data:
            data = {**data, "type": "response_value"}
        return data

    @model_validator(mode="after")
    def _source(self) -> MeterSpec:
        if self.type == "response_value" and self.response_value is None:
            raise ValueError("a response_value meter needs response_value: {json_path: ...} or {header: ...}")
        if self.type == "request_count" and self.response_value is not None:
            raise ValueError("response_value is only for type: response_value")
        return self


# The type of `Proxy.meters`: names are unique within a proxy (they key the counters).
MeterList = Annotated[list[MeterSpec], AfterValidator(unique_names("meter"))]
