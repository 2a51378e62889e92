"""The policy reference and JSON Schema, generated from the configuration models.

`rr schema` prints `json_schema()`; `rr schema --markdown` prints `markdown()`,
committed as docs/policy.md (and the schema as docs/policy.schema.json). Types,
defaults, allowed values and constraints are read from the pydantic models; the
sentences and examples live in `reference_text` and are checked against the
models by `problems()` (and by the test that compares the committed files).
"""

from __future__ import annotations

import datetime
import json
from decimal import Decimal
import re
import typing
from typing import Any, Literal

import yaml
from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from rr_addon.policy import credential_base, paths_schema, rules_schema, schema
from rr_addon.config.diff import SECRET_FIELDS
from rr_addon.config.messages import _strip, _union_members
from rr_addon.config.reference_text import CODES, FIELDS, INTRO, OBJECTS
from rr_addon.core.types import STATUS

BASES = (credential_base.TargetCredentialBase, credential_base.ProxyCredentialBase, rules_schema.Match, paths_schema.PathSpec)  # sections other sections extend
TAGS = ("kind", "auth")
# Headings one level down (parts of the section above them).
SUBSECTIONS = {"PathSpec", "PathMatch", "HeaderMatch", "QueryMatch", "BodyMatch", "McpMatch", "McpArgumentMatch", "ClaimMatch", "JwksCache", "Limits", "JsonPathValue", "HeaderValue", "CustomDetector", "FileSecret", "ExecSecret"}
# Short forms a model normalises before validating (its mode="before" validators):
# the reference names them, and json_schema() accepts them.
SHORT_FORMS = {
    ("Match", "path"): " or regex",
    ("ValidateEntry", "path"): " or regex",
    ("MeterSpec", "type"): " or `{response_value: …}`",
    ("_TokenEndpoint", "scope"): " or list of string",
}
# Strings the models compile at validation time, by the validator that does it.
STRING_KINDS = {"check_re2": "regex", "_check_json_path": "JSONPath", "_json_path": "JSONPath"}


def reachable(t: Any = schema.Config, out: list | None = None) -> list[type[BaseModel]]:
    """Every model a policy file can contain, in first-seen order."""
    out = [] if out is None else out
    t, _ = _strip(t)
    if isinstance(t, type) and issubclass(t, BaseModel):
        if t not in out:
            out.append(t)
            for f in t.model_fields.values():
                reachable(f.annotation, out)
        return out
    for arg in typing.get_args(t):
        reachable(arg, out)
    return out


def _models_by_name() -> dict[str, type[BaseModel]]:
    return {m.__name__: m for m in [*reachable(), *BASES]}


def owner(model: type[BaseModel], field: str) -> type:
    """The class that declares `field` (so an inherited field is described once)."""
    for cls in reversed(model.__mro__):
        if field in vars(cls).get("__annotations__", {}):
            return cls
    return model


def slug(heading: str) -> str:
    """The anchor a Markdown renderer gives a heading."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-")


def _sections() -> dict[type, str]:
    by_name = _models_by_name()
    return {by_name[name]: slug(heading) for name, heading, _, _ in OBJECTS if name in by_name}


def _link(model: type, anchors: dict[type, str]) -> str:
    for base in BASES[:2]:  # a union of credential kinds links to the section of all kinds
        if issubclass(model, base) and model is not base:
            return f"[{_heading(base).lower()}](#{anchors[base]})"
    return f"[{_heading(model)}](#{anchors[model]})" if model in anchors else model.__name__


def _heading(model: type) -> str:
    return next(h for n, h, _, _ in OBJECTS if n == model.__name__)


def type_text(t: Any, anchors: dict[type, str]) -> str:
    t, meta = _strip(t)
    if any(getattr(m, "func", None) is schema.SecretRef.__metadata__[0].func for m in meta) or t is schema.SecretRef:
        return "[secret](#secret)"
    members = [m for m in (_union_members(t) or ()) if m is not type(None)]
    if members:
        if {_strip(m)[0] for m in members} == {str, schema.EnvSecret, schema.FileSecret, schema.ExecSecret}:
            return "[secret](#secret)"
        texts = list(dict.fromkeys(type_text(m, anchors) for m in members))
        return " or ".join(texts)
    if t is str:
        for m in meta:
            kind = STRING_KINDS.get(getattr(getattr(m, "func", None), "__name__", ""))
            if kind:
                return kind
    origin = typing.get_origin(t)
    if origin is Literal:
        return " \\| ".join(f"`{v}`" for v in typing.get_args(t))
    if origin is list:
        return "list of " + type_text(typing.get_args(t)[0], anchors)
    if origin is dict:
        key, value = typing.get_args(t)
        return "mapping" if value is Any else f"mapping of {type_text(key, anchors)} → {type_text(value, anchors)}"
    if isinstance(t, type) and issubclass(t, BaseModel):
        return _link(t, anchors)
    return {str: "string", int: "integer", float: "number", Decimal: "number", bool: "boolean", datetime.datetime: "date-time", Any: "any"}.get(t, str(t))


def _constraints(info) -> str:
    words = {Ge: ("ge", "≥ {}"), Gt: ("gt", "> {}"), Le: ("le", "≤ {}"), Lt: ("lt", "< {}"), MinLen: ("min_length", "length ≥ {}"), MaxLen: ("max_length", "at most {}")}
    out = []
    for m in info.metadata:
        for cls, (attr, fmt) in words.items():
            if isinstance(m, cls):
                out.append(fmt.format(getattr(m, attr)))
    return ", ".join(out)


def default_text(info) -> str:
    if info.is_required():
        return "*required*"
    if info.default_factory is not None:
        value = info.default_factory()
    else:
        value = info.default
    if value is None or value is PydanticUndefined:
        return "—"
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", exclude_none=True)
    return "`" + json.dumps(value, ensure_ascii=False) + "`"


def _field_text(model: type, name: str, info) -> str:
    key = f"{owner(model, name).__name__}.{name}"
    if name in TAGS:
        return f"Selects this kind: `{name}: {typing.get_args(info.annotation)[0]}`."
    return FIELDS.get(key, "")


def _shown_fields(model: type) -> list[tuple[str, Any]]:
    return [(n, f) for n, f in model.model_fields.items() if model in BASES or not any(owner(model, n) is b for b in BASES)]


def markdown() -> str:
    anchors = _sections()
    by_name = _models_by_name()
    out = [INTRO]
    for name, heading, intro, example in OBJECTS:
        model = by_name[name]
        level = "###" if heading.startswith(("kind:", "auth:")) or name in SUBSECTIONS else "##"
        out.append(f"{level} {heading}\n\n{intro}\n")
        rows = sorted(_shown_fields(model), key=lambda row: row[0] not in TAGS)  # kind/auth first
        if rows:
            out.append("| field | type | default | |\n|---|---|---|---|")
            for field, info in rows:
                yaml_name = info.alias or field
                limits = _constraints(info)
                short = next((v for (m, f), v in SHORT_FORMS.items() if f == field and m in {c.__name__ for c in model.__mro__}), "")
                annotation = typing.Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
                typ = type_text(annotation, anchors) + short + (f" ({limits})" if limits else "")
                out.append(f"| `{yaml_name}` | {typ} | {default_text(info)} | {_field_text(model, field, info)} |")
            out.append("")
        extended = [b for b in BASES if b is not model and issubclass(model, b)]
        for base in extended:
            out.append(f"Also every field of [{_heading(base)}](#{anchors[base]}).\n")
        if example:
            out.append(f"```yaml\n{example}```\n")
    out.append("## Answers rr gives\n\nEvery answer rr gives itself is JSON, `{\"error\": {\"code\", \"message\", \"request_id\"}}`, with the header `rr-proxy-code`; every proxied response carries `rr-request-id`.\n")
    out.append("| status | code | when |\n|---|---|---|")
    for code, status in STATUS.items():
        out.append(f"| {status} | `{code}` | {CODES.get(code, '')} |")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------
# JSON Schema

_SECRET = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "object", "properties": {"env": {"type": "string", "minLength": 1}}, "required": ["env"], "additionalProperties": False},
        {
            "type": "object",
            "properties": {"file": {"type": "string", "minLength": 1}, "watch": {"type": "boolean"}},
            "required": ["file"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {
                "command": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
                "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 300},
                "refresh": {"type": "number", "minimum": 1, "maximum": 86400},
            },
            "required": ["command"],
            "additionalProperties": False,
        },
    ],
    "description": "A literal string, {env: NAME}, {file: PATH}, {file: PATH, watch: true} or {command: [ARGV…], timeout: S, refresh: S}.",
}


def json_schema() -> dict:
    """The policy file's JSON Schema (2020-12), accepting every form the models accept."""
    doc = schema.Config.model_json_schema(by_alias=True, mode="validation")
    defs = doc["$defs"]
    by_name = _models_by_name()
    for def_name, d in defs.items():
        model = by_name.get(def_name)
        for field, prop in d.get("properties", {}).items():
            prop.pop("title", None)
            if field in SECRET_FIELDS:
                d["properties"][field] = {"anyOf": [_SECRET, {"type": "null"}], "default": None}
                prop = d["properties"][field]
            if model is not None:
                name = next((n for n, f in model.model_fields.items() if (f.alias or n) == field), field)
                text = _field_text(model, name, model.model_fields[name]) if name in model.model_fields else ""
                if text:
                    prop["description"] = re.sub(r"\[([^\]]+)\]\(#[^)]*\)", r"\1", text)
        if model is not None:
            intro = next((i for n, _, i, _ in OBJECTS if n == def_name), "")
            if intro:
                d["description"] = intro
    # Short forms the models normalise before validating (see their `mode="before"` validators).
    for def_name in ("Match", "Rule", "ValidateEntry"):
        defs[def_name]["properties"]["path"]["anyOf"].insert(0, {"type": "string", "minLength": 1})
    meter = defs["MeterSpec"]["properties"]
    meter["type"] = {
        "anyOf": [
            {k: v for k, v in meter["type"].items() if k not in ("default", "description")},
            {
                "type": "object",
                "properties": {"response_value": {"anyOf": [{"$ref": "#/$defs/JsonPathValue"}, {"$ref": "#/$defs/HeaderValue"}]}},
                "required": ["response_value"],
                "additionalProperties": False,
            },
        ],
        "default": "request_count",
        "description": meter["type"].get("description", ""),
    }
    meter["limits"] = {"anyOf": [meter["limits"], {"type": "null"}], "description": meter["limits"].get("description", "")}
    for kind in ("OAuth2ClientCredentials", "OAuth2RefreshToken", "OAuth2JwtBearer"):
        scope = defs[kind]["properties"]["scope"]
        scope["anyOf"].insert(1, {"type": "array", "items": {"type": "string"}})
    doc["title"] = "rr policy"
    doc["description"] = "An rr policy file (targets and proxies). Reference: docs/policy.md."
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **doc}


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def problems() -> list[str]:
    """Where the words of the reference and the models disagree (empty when they agree)."""
    out: list[str] = []
    by_name = _models_by_name()
    described = {n for n, *_ in OBJECTS}
    for model in reachable():
        if model.__name__ not in described:
            out.append(f"model {model.__name__} has no section in reference_text.OBJECTS")
    keys = set()
    for model in [*reachable(), *BASES]:
        for name, info in model.model_fields.items():
            if name in TAGS:
                continue
            key = f"{owner(model, name).__name__}.{name}"
            keys.add(key)
            if key not in FIELDS:
                out.append(f"field {key} has no sentence in reference_text.FIELDS")
    out += [f"reference_text.FIELDS describes {k}, which no model has" for k in sorted(set(FIELDS) - keys)]
    out += [f"reference_text.OBJECTS names {n}, which is no model" for n in described if n not in by_name]
    out += [f"status code {c} has no sentence in reference_text.CODES" for c in STATUS if c not in CODES]
    for name, heading, _, example in OBJECTS:
        if example and name in by_name:
            try:
                by_name[name].model_validate(yaml.safe_load(example))
            except Exception as e:  # noqa: BLE001  (any failure is a problem to report)
                out.append(f"the example of {heading} does not validate: {e}")
    return out
