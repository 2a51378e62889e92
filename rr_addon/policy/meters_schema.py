"""`meters:` entries of a proxy (docs/policy.md: meters) as pydantic models.

    - name: tokens
      type: response_value           # or request_count (the default)
      response_value: {json_path: "$.usage.total_tokens"}   # or {header: x-tokens}
      limits: {day: 100000}          # any of minute/hour/day/month; none = track only
      per: credential                # proxy (default) | credential
      when: {methods: [POST]}        # rule match syntax, compiled by the rules module
      timezone: Europe/Berlin        # IANA name; windows are UTC by default
      on_backend_error: deny         # deny (default) | allow, when counters are unreachable
      reserve: {json_path: "$.max_tokens", default: 4096}   # response_value and cost: reserve before forwarding

    - name: spend
      type: cost                     # money from a price table (docs/budgets.md)
      cost: {model: "$.model", prices: {gpt-4o-mini: {input: 0.00015, output: 0.0006}},
             input: "$.usage.prompt_tokens", output: "$.usage.completion_tokens"}
      currency: USD
      limits: {month: 250}           # in the currency; fractions down to one micro-unit

`type: {response_value: {json_path: …}}` is accepted too and normalised to the above.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, PlainSerializer, WithJsonSchema, field_validator, model_validator

from rr_addon.policy.base import Model, _header_name, _name, unique_names
from rr_addon.policy.rules_schema import Match
from rr_addon.policy.costs import LARGEST, MICRO
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


def _json_paths(v: str | list[str]) -> str | list[str]:
    for text in [v] if isinstance(v, str) else v:
        compile_path(text)  # JsonPathError is a ValueError: reported on the field
    return v


# One JSONPath, or several tried in order (e.g. Anthropic's non-streamed and streamed shapes).
JsonPaths = Annotated[str | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)], AfterValidator(_json_paths)]


# A number, read exactly; stored and shown as a whole number when it is one (so stored
# limits of count meters look as they always did), else as its exact decimal text.
LimitValue = Annotated[
    Decimal,
    WithJsonSchema({"type": "number", "minimum": 0}),
    PlainSerializer(lambda v: int(v) if v == v.to_integral_value() else str(v), when_used="json"),
]


class Limits(Model):
    # Counts for request_count and response_value meters (whole numbers), money for cost meters.
    minute: LimitValue | None = Field(default=None, ge=0)
    hour: LimitValue | None = Field(default=None, ge=0)
    day: LimitValue | None = Field(default=None, ge=0)
    month: LimitValue | None = Field(default=None, ge=0)

    @field_validator("minute", "hour", "day", "month", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        if isinstance(v, bool):  # Decimal would take True as 1
            raise ValueError("expected a number; got true or false")
        return v

    def by_kind(self, scale: int = 1) -> tuple[int | None, ...]:
        """Limits aligned with `windows.KINDS`, as integer counter units (`scale`
        units per configured unit: 1, or `costs.MICRO` for money)."""
        return tuple(None if (v := getattr(self, k)) is None else int(v * scale) for k in KINDS)


class Reserve(Model):
    json_path: JsonPaths | None = None
    default: int = Field(ge=0, le=2**53)
    times: JsonPaths | None = None
    unmeasured: Literal["charge", "release"] = "charge"
    add_request_bytes: bool | None = None


class Price(Model):
    input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)


class CostSpec(Model):
    model: JsonPaths
    prices: dict[str, Price] = Field(min_length=1)
    default: Price | None = None
    input: JsonPaths
    output: JsonPaths


class MeterSpec(Model):
    name: str
    type: Literal["request_count", "response_value", "cost"] = "request_count"
    response_value: JsonPathValue | HeaderValue | None = None
    cost: CostSpec | None = None
    currency: str | None = None
    reserve: Reserve | None = None
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
                raise ValueError("type is request_count, response_value, cost, or {response_value: {json_path|header: ...}}")
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
        if self.type != "response_value" and self.response_value is not None:
            raise ValueError("response_value is only for type: response_value")
        if self.type == "cost" and self.cost is None:
            raise ValueError("a cost meter needs cost: {model: ..., prices: {...}, input: ..., output: ...}")
        if self.type != "cost" and self.cost is not None:
            raise ValueError("cost is only for type: cost")
        if self.type != "cost" and self.currency is not None:
            raise ValueError("currency is only for type: cost (the other meters count numbers, not money)")
        if self.type == "request_count" and self.reserve is not None:
            raise ValueError("reserve is only for response_value and cost meters (a request_count meter counts one on admission)")
        for kind in KINDS:
            v = getattr(self.limits, kind)
            if v is None:
                continue
            if self.type == "cost":
                if v * MICRO != int(v * MICRO):
                    raise ValueError(f"limits.{kind}: {v:f} is finer than one micro-unit of the currency (at most 6 decimals)")
            elif v != int(v):
                raise ValueError(f"limits.{kind}: {v:f} is not a whole number (only a cost meter counts fractions)")
            if v * (MICRO if self.type == "cost" else 1) > LARGEST:
                raise ValueError(f"limits.{kind}: {v} is too large (counters are exact up to 2**53 units)")
        return self

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str | None) -> str | None:
        if v is not None and not (3 <= len(v) <= 8 and v.isascii() and v.isalnum() and v.isupper()):
            raise ValueError(f"{v!r}: a currency is a code of 3 to 8 capital letters or digits, such as USD or EUR")
        return v


# The type of `Proxy.meters`: names are unique within a proxy (they key the counters).
MeterList = Annotated[list[MeterSpec], AfterValidator(unique_names("meter"))]
