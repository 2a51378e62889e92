"""Request validation (docs/policy.md: validate): body size (413), content type (415) and
JSON Schema draft 2020-12 (400) for requests matching `methods` + `path`.

Every entry that applies to a request is checked; the checks run cheapest
first across all of them — size, then content type, then schema — so a huge
body is refused before anything parses it. Choices the contract leaves open:
- `max_body_bytes` counts the body as received and, when it must be decoded
  for a schema, the decoded body too (a small gzip bomb is still 413).
- `content_types` is checked when the request has a body or a Content-Type;
  entries are media types, `type/*` or `*/*`, parameters ignored.
- An applicable `json_schema` needs a JSON body: another content type is 415,
  an empty or malformed body 400. The detail names the failing JSON pointer
  ("/amount: 'amount' is a required property"), never the offending value,
  so it can go to logs and audit records.
Schemas are compiled once; floats in them become Decimals so they compare
exactly with the request's numbers (which `parse_json` keeps exact).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterable, Sequence

import jsonschema
import re2
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from rr_addon.policy.bodies import (
    BodyError,
    CorruptEncoding,
    DecodedTooLarge,
    JsonError,
    UnsupportedEncoding,
    check_depth,
    decode_content,
    is_json_content_type,
    media_type,
    parse_json,
)
from rr_addon.core import reasons

# Fixed reasons (tests and audit readers rely on these sentences).

# Decoding cap when no max_body_bytes applies (a compressed request body is rare).
DEFAULT_DECODED_LIMIT = 16 * 1024 * 1024
# jsonschema recurses ~5 Python frames per level of nesting.
SCHEMA_MAX_DEPTH = 64


@dataclass(frozen=True, slots=True)
class RequestBody:
    """What validation needs from a request (built by the glue)."""

    method: str
    path: str  # canonical path, without the query
    content_type: str | None = None
    content_encoding: str | None = None
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Violation:
    code: str  # rr error code: payload-too-large | unsupported-media-type | invalid-request
    reason: str  # one of the constants above
    detail: str | None = None  # (rr_addon.core.decide.violation_decision makes it a Decision)


def compile_re2(pattern: str) -> re2._Regexp:
    """The compiled pattern, or ValueError with RE2's reason."""
    try:
        options = re2.Options()
        options.log_errors = False
        return re2.compile(pattern, options)
    except re2.error as e:
        raw = e.args[0] if e.args else b""
        detail = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        raise ValueError(f"not a valid RE2 regex: {detail}") from None


def _is_integer(checker: Any, value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, Decimal):  # JSON 1.0 is an integer (JSON Schema §4.2.2)
        return value.is_finite() and value == value.to_integral_value()
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


_Validator = jsonschema.validators.extend(
    Draft202012Validator, type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer)
)


def _exact(node: Any) -> Any:
    if type(node) is float:
        return Decimal(repr(node))
    if type(node) is dict:
        return {k: _exact(v) for k, v in node.items()}
    if type(node) is list:
        return [_exact(v) for v in node]
    return node


def _local_refs_only(node: Any) -> None:
    if type(node) is dict:
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            raise ValueError(f"$ref {ref!r}: only references inside the schema ('#...') are supported")
        for v in node.values():
            _local_refs_only(v)
    elif type(node) is list:
        for v in node:
            _local_refs_only(v)


def compile_schema(schema: Any) -> Any:
    """A validator object for a draft 2020-12 schema; ValueError if the schema is invalid."""
    try:
        Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as e:
        where = "/" + "/".join(str(p) for p in e.absolute_path) if e.absolute_path else "(root)"
        raise ValueError(f"invalid JSON Schema at {where}: {e.message}") from None
    _local_refs_only(schema)
    return _Validator(_exact(schema))


@dataclass(frozen=True, slots=True)
class Check:
    """One compiled `validate:` entry."""

    methods: frozenset[str] | None = None
    path: Any = None  # compiled RE2, search semantics
    max_body_bytes: int | None = None
    content_types: tuple[str, ...] = ()
    schema: Any = None  # compiled validator

    def applies(self, method: str, path: str) -> bool:
        if self.methods is not None and method.upper() not in self.methods:
            return False
        return self.path is None or self.path.search(path) is not None


def compile_check(entry: Any) -> Check:
    """From a `validate:` entry (rr_addon.policy.filters_schema.ValidateEntry)."""
    return Check(
        methods=frozenset(m.upper() for m in entry.methods) if entry.methods else None,
        path=compile_re2(entry.path.re2()) if entry.path else None,
        max_body_bytes=entry.max_body_bytes,
        content_types=tuple(t.lower() for t in entry.content_types or ()),
        schema=compile_schema(entry.json_schema) if entry.json_schema is not None else None,
    )


def compile_checks(entries: Iterable[Any]) -> tuple[Check, ...]:
    return tuple(compile_check(e) for e in entries)


def _type_allowed(mt: str, allowed: Sequence[str]) -> bool:
    kind = mt.split("/", 1)[0]
    return any(a == mt or a == "*/*" or (a.endswith("/*") and a[:-2] == kind) for a in allowed)


def _pointer(parts: Iterable[Any]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _describe(error: jsonschema.ValidationError) -> str:
    """'<pointer>: <message>' without the offending value (it may be sensitive)."""
    parts = list(error.absolute_path)
    message = error.message
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [p for p in error.validator_value if p not in error.instance]
        named = [p for p in missing if f"{p!r} is a required property" == message]
        if named:
            parts.append(named[0])  # point at the member that is missing
    else:
        shown = repr(error.instance)
        if shown in message:
            message = message.replace(shown, "value", 1)
    return f"{_pointer(parts) or '(root)'}: {message}"


def validate(checks: Sequence[Check], req: RequestBody) -> Violation | None:
    """The first violation of the checks that apply to `req`, or None."""
    applicable = [c for c in checks if c.applies(req.method, req.path)]
    if not applicable:
        return None
    body = req.body or b""
    limits = [c.max_body_bytes for c in applicable if c.max_body_bytes is not None]
    limit = min(limits) if limits else None
    if limit is not None and len(body) > limit:
        return Violation("payload-too-large", reasons.VALIDATION_BODY_TOO_LARGE, f"{len(body)} bytes; the limit is {limit}")

    mt = media_type(req.content_type)
    if body or mt:
        for c in applicable:
            if c.content_types and not _type_allowed(mt, c.content_types):
                return Violation("unsupported-media-type", reasons.VALIDATION_CONTENT_TYPE_NOT_ALLOWED, f"{mt or 'no content type'} is not one of {', '.join(c.content_types)}")

    schemas = [c.schema for c in applicable if c.schema is not None]
    if not schemas:
        return None
    if not body:
        return Violation("invalid-request", reasons.VALIDATION_BODY_NOT_JSON, "the body is empty")
    if not is_json_content_type(req.content_type):
        return Violation("unsupported-media-type", reasons.VALIDATION_JSON_REQUIRED, f"{mt or 'no content type'} is not JSON")
    try:
        doc = parse_json(decode_content(body, req.content_encoding, limit=limit or DEFAULT_DECODED_LIMIT))
        check_depth(doc, SCHEMA_MAX_DEPTH)
    except DecodedTooLarge:
        return Violation("payload-too-large", reasons.VALIDATION_BODY_TOO_LARGE, f"decoded body exceeds {limit or DEFAULT_DECODED_LIMIT} bytes")
    except UnsupportedEncoding as e:
        return Violation("unsupported-media-type", reasons.VALIDATION_ENCODING_NOT_SUPPORTED, str(e))
    except (JsonError, CorruptEncoding, BodyError) as e:
        return Violation("invalid-request", reasons.VALIDATION_BODY_NOT_JSON, str(e))
    for schema in schemas:
        try:
            error = best_match(schema.iter_errors(doc))
        except (ArithmeticError, RecursionError):  # e.g. 1e400 against multipleOf: 0.01
            return Violation("invalid-request", reasons.VALIDATION_SCHEMA_MISMATCH, "a value is out of the range the schema can check")
        if error is not None:
            return Violation("invalid-request", reasons.VALIDATION_SCHEMA_MISMATCH, _describe(error))
    return None
