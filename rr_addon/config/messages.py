"""Validation errors a person can act on.

pydantic reports what failed in its own words ("Input should be a valid
dictionary or instance of Limits", "Unable to extract tag using discriminator")
and at locations that name its internals (union members, tags). This module
rewrites each error in the policy's words: the valid fields with a
did-you-mean for an unknown one, the allowed values for an enumeration, the
expected shape with the field names for a wrong type. It walks the models
along the error's location, so the lists come from the models themselves.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Tag

from rr_addon.policy.schema import Config


@dataclass(frozen=True)
class Located:
    """The type found at an error's location, and the location without union members."""

    type: Any  # a model class, a typing form, or None when unknown
    loc: tuple
    unions: tuple  # (prefix of loc, member chosen) for each plain union passed through


def _strip(t: Any) -> tuple[Any, list]:
    """Remove Annotated and Optional wrappers; return the type and its metadata."""
    meta: list = []
    while True:
        if typing.get_origin(t) is Annotated:
            meta.extend(t.__metadata__)
            t = t.__origin__
            continue
        args = _union_members(t)
        if args is not None:
            rest = [a for a in args if a is not type(None)]
            if len(rest) == 1 and len(rest) != len(args):
                t = rest[0]
                continue
        return t, meta


def _union_members(t: Any) -> tuple | None:
    return typing.get_args(t) if typing.get_origin(t) in (Union, types.UnionType) else None


def _member_for(t: Any, elem: Any) -> Any:
    """The member of union `t` that pydantic names `elem` in a location, if any."""
    for member in _union_members(t) or ():
        inner, meta = _strip(member)
        if any(isinstance(m, Tag) and m.tag == elem for m in meta):
            return inner
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            if inner.__name__ == elem:
                return inner
            for tag in ("kind", "auth"):
                field = inner.model_fields.get(tag)
                if field is not None and elem in (typing.get_args(field.annotation) or ()):
                    return inner
    return None


def locate(loc: tuple) -> Located:
    t: Any = Config
    clean: list = []
    unions: list = []
    for elem in loc:
        t, _ = _strip(t)
        if _union_members(t) is not None:
            member = _member_for(t, elem)
            if member is not None:
                if not _discriminated(t):
                    unions.append((tuple(clean), member))
                t = member
                continue
        clean.append(elem)
        if isinstance(t, type) and issubclass(t, BaseModel) and isinstance(elem, str):
            name = next((n for n, f in t.model_fields.items() if elem in (n, f.alias)), None)
            t = t.model_fields[name].annotation if name else None
        elif typing.get_origin(t) is list and isinstance(elem, int):
            t = typing.get_args(t)[0]
        elif typing.get_origin(t) is dict:
            t = typing.get_args(t)[1]
        else:
            t = None
    t, _ = _strip(t) if t is not None else (None, [])
    return Located(t, tuple(clean), tuple(unions))


def _discriminated(t: Any) -> bool:
    return all(_member_for(t, tag) is not None for tag in _tags(t)) and bool(_tags(t))


def _tags(t: Any) -> list[str]:
    """The `kind:`/`auth:` values of a discriminated union's members."""
    out: list[str] = []
    for member in _union_members(t) or ():
        inner, _ = _strip(member)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            for tag in ("kind", "auth"):
                field = inner.model_fields.get(tag)
                if field is not None:
                    out.extend(typing.get_args(field.annotation))
    return out


def fields_of(model: type[BaseModel]) -> list[str]:
    """The model's field names as written in YAML: name and kind/auth first, then in declaration order."""
    names = [f.alias or n for n, f in model.model_fields.items()]
    first = [n for n in ("name", "kind", "auth") if n in names]
    return first + [n for n in names if n not in first]


def literal_values(t: Any) -> list[str]:
    t, _ = _strip(t)
    if typing.get_origin(t) is Literal:
        return [str(v) for v in typing.get_args(t)]
    out: list[str] = []
    for member in _union_members(t) or ():  # e.g. a detector: a built-in name or {custom: …}
        out.extend(literal_values(member))
    return out


def did_you_mean(word: Any, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.65)  # 0.6 would offer "basic" for "magic"
    return f"; did you mean {close[0]!r}?" if close else ""


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {value!r}"
    if value is None:
        return "nothing (null)"
    return repr(value)


def _one_of(values: list[str]) -> str:
    return ", ".join(values)


def _shape(t: Any) -> str:
    """What a value of type `t` looks like, in the policy's words."""
    if isinstance(t, type) and issubclass(t, BaseModel):
        return f"a mapping with the fields {_one_of(fields_of(t))}"
    members = [m for m in (_union_members(t) or ()) if m is not type(None)]
    if members:
        return " or ".join(_shape(_strip(m)[0]) for m in members)
    origin = typing.get_origin(t)
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping (name: value)"
    if origin is Literal:
        return f"one of {_one_of(literal_values(t))}"
    return {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}.get(t, "another kind of value")


def message(err: dict, where: Located, parent: Located) -> str:
    """The sentence for one pydantic error (`where`: its location; `parent`: one level up)."""
    kind = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        valid = fields_of(parent.type) if isinstance(parent.type, type) and issubclass(parent.type, BaseModel) else []
        field = where.loc[-1] if where.loc else "?"
        hint = did_you_mean(field, valid)
        return f"unknown field {field!r}" + (hint or ".") + (f" Valid fields: {_one_of(valid)}" if valid else "")
    if kind == "missing":
        return "required field missing"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tag = str(ctx.get("discriminator", "kind")).strip("'")
        tags = _tags(where.type) if where.type is not None else []
        tags = tags or [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",") if t.strip()]
        if kind == "union_tag_not_found":
            return f"missing '{tag}': one of {_one_of(tags)}"
        return f"{tag} {ctx.get('tag')!r} is not one of {_one_of(tags)}{did_you_mean(ctx.get('tag'), tags)}"
    if kind == "literal_error":
        values = literal_values(where.type) or [v.strip(" '") for v in str(ctx.get("expected", "")).replace(" or ", ", ").split(",")]
        return f"{value!r} is not one of {_one_of(values)}{did_you_mean(value, values)}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected {_shape(where.type)}; got {_kind_of(value)}"
    if kind == "list_type":
        extra = " (write [value] for one entry)" if isinstance(value, (str, int, float)) else ""
        return f"expected a list; got {_kind_of(value)}{extra}"
    if kind in ("string_type",):
        return f"expected a string; got {_kind_of(value)}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected a whole number; got {_kind_of(value)}"
    if kind in ("float_type", "float_parsing", "decimal_type", "decimal_parsing"):
        return f"expected a number; got {_kind_of(value)}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false; got {_kind_of(value)}"
    if kind.startswith("datetime") or kind.startswith("date_"):
        return f"expected a date and time like 2027-01-31T00:00:00Z; got {_kind_of(value)}"
    bounds = {"greater_than_equal": ("ge", "at least"), "greater_than": ("gt", "more than"), "less_than_equal": ("le", "at most"), "less_than": ("lt", "less than")}
    if kind in bounds:
        key, words = bounds[kind]
        return f"must be {words} {ctx.get(key)}; got {value!r}"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length', 1)} entr{'y' if ctx.get('min_length', 1) == 1 else 'ies'}"
    if kind == "too_long":
        return f"may have at most {ctx.get('max_length')} entries"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"may be at most {ctx.get('max_length')} characters"
    text = err["msg"]
    if text.startswith("Value error, "):
        return text[len("Value error, ") :]
    if text.startswith("Input should be "):
        return "must be " + text[len("Input should be ") :]
    return text


def humanize(errors: list[dict]) -> list[tuple[tuple, str]]:
    """(location without union members, sentence) per error, keeping only the
    best-fitting member's errors where a value matched none of a plain union's
    members (e.g. `response_value: {jsonpath: …}` is neither {json_path} nor {header})."""
    located = [(err, locate(tuple(err["loc"]))) for err in errors]
    best: dict[tuple, Any] = {}
    by_member: dict[tuple, dict[Any, int]] = {}
    for err, where in located:
        for prefix, member in where.unions:
            by_member.setdefault(prefix, {}).setdefault(member, 0)
            by_member[prefix][member] += 1
    for prefix, counts in by_member.items():
        best[prefix] = min(counts, key=lambda m: (counts[m], list(counts).index(m)))
    out: list[tuple[tuple, str]] = []
    seen: set = set()
    for err, where in located:
        if any(best.get(prefix) is not member for prefix, member in where.unions):
            continue
        parent = locate(tuple(err["loc"])[:-1]) if err["loc"] else where
        text = message(err, where, parent)
        if where.unions and where.unions[-1][0] == where.loc and err["type"] in ("model_type", "model_attributes_type", "dict_type"):
            # the value fits none of the shapes: name them all, not the one pydantic tried first
            members = by_member[where.loc]
            text = f"expected {' or '.join(_shape(m) for m in members)}; got {_kind_of(err.get('input'))}"
        for prefix, _ in where.unions:
            others = [m for m in by_member[prefix] if m is not best[prefix]]
            if others and err["type"] == "extra_forbidden":
                text += " (or " + "; or ".join(_one_of(fields_of(m)) for m in others if isinstance(m, type)) + ")"
        loc = where.loc
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc += (str((err.get("ctx") or {}).get("discriminator", "kind")).strip("'"),)
        if (loc, text) not in seen:
            seen.add((loc, text))
            out.append((loc, text))
    return out
