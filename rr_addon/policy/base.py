"""Building blocks shared by every part of the configuration language: the
strict base model, names and secret references. Sub-languages (rules, meters,
filters, identities) import from here, and `rr_addon.policy.schema` assembles
them, so nothing imports in a circle."""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
HEADER_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _name(value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError("must be 1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit")
    return value


def _header_name(value: str) -> str:
    if not HEADER_RE.match(value):
        raise ValueError(f"{value!r} is not a valid HTTP header name")
    return value


Name = Annotated[str, Field(min_length=1)]
Effect = Literal["allow", "deny"]


class EnvSecret(Model):
    env: str = Field(min_length=1)


class FileSecret(Model):
    file: str = Field(min_length=1)
    # watch: the data plane re-reads the file when it changes (rr_addon/rotation.py);
    # without it `rr apply` reads it once, as before.
    watch: bool = False


class ExecSecret(Model):
    # a command that prints the secret (a vault CLI), run by `rr apply` and then
    # by every data plane every `refresh` seconds (rr_addon/secret_command.py)
    command: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    timeout: float = Field(10.0, gt=0, le=300)
    refresh: float = Field(300.0, ge=1, le=86400)


def _exec_secret(value: dict) -> ExecSecret:
    try:
        return ExecSecret.model_validate(value)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ValueError(f"secret command{' ' + where if where else ''}: {first['msg']}") from None


def _secret_ref(value: object) -> str | EnvSecret | FileSecret | ExecSecret:
    if isinstance(value, (EnvSecret, FileSecret, ExecSecret)):
        return value
    if isinstance(value, dict) and "command" in value:
        return _exec_secret(value)
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((key, ref),) = value.items()
        if key in ("env", "file") and isinstance(ref, str) and ref:
            return EnvSecret(env=ref) if key == "env" else FileSecret(file=ref)
    if isinstance(value, dict) and set(value) == {"file", "watch"}:
        if isinstance(value["file"], str) and value["file"] and isinstance(value["watch"], bool):
            return FileSecret(file=value["file"], watch=value["watch"])
    raise ValueError("a secret is a non-empty string, {env: NAME}, {file: PATH}, {file: PATH, watch: true} or {command: [ARGV…], timeout: S, refresh: S}")


# A secret is a literal string, {env: NAME}, {file: PATH} or {command: [..]}; resolved by `rr apply`.
SecretRef = Annotated[Union[str, EnvSecret, FileSecret, ExecSecret], PlainValidator(_secret_ref)]


def unique_names(what: str):
    """An AfterValidator for a list of named entries: names are unique within the list."""

    def check(items: list) -> list:
        seen: set[str] = set()
        for item in items:
            if item.name in seen:
                raise ValueError(f"duplicate {what} name {item.name!r}")
            seen.add(item.name)
        return items

    return check
