"""Reading configuration files: YAML → validated `Config`, with errors that
name the file, the line, the object and the field.

Nothing here writes anything; `rr apply` calls `load_files`, then
`validate.check`, then `resolve_secrets`, and only writes when all are clean.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Iterable, Mapping

import yaml
from pydantic import ValidationError

from rr_addon.config.messages import humanize
from rr_addon.policy.schema import Config, EnvSecret, ExecSecret, FileSecret

MAX_CONFIG_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class ConfigError:
    file: str
    path: str  # object and field, e.g. "proxies[billing].credentials[agent-1].secret"
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line else "")
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigErrors(Exception):
    def __init__(self, errors: Iterable[ConfigError]):
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


@dataclass
class Source:
    """Where each object came from, for error messages."""

    files: dict[tuple[str, str], str] = field(default_factory=dict)  # (section, name) -> file
    lines: dict[tuple[str, str], dict[tuple, int]] = field(default_factory=dict)
    base_dirs: dict[tuple[str, str], Path] = field(default_factory=dict)

    def file_of(self, section: str, name: str) -> str:
        return self.files.get((section, name), "<config>")

    def line_of(self, section: str, name: str, rest: tuple = ()) -> int | None:
        lines = self.lines.get((section, name), {})
        for n in range(len(rest), -1, -1):
            if (line := lines.get(rest[:n])) is not None:
                return line
        return None


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser when present
    """SafeLoader that refuses duplicate mapping keys (YAML silently keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):  # `{a: 1}: x`, or a flow mapping with doubled braces
                raise yaml.constructor.ConstructorError(None, None, "a mapping key must be a plain value, not a list or mapping", key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _node_lines(node: yaml.Node, path: tuple = ()) -> dict[tuple, int]:
    """Map every path in the document to its 1-based line."""
    out = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode):
                out[path + (k.value,)] = k.start_mark.line + 1
                out.update(_node_lines(v, path + (k.value,)))
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out.update(_node_lines(v, path + (i,)))
    return out


def read_yaml(path: Path) -> tuple[Any, dict[tuple, int]]:
    name = str(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ConfigErrors([ConfigError(name, "", f"cannot read file: {e.strerror}")]) from None
    if size > MAX_CONFIG_BYTES:
        raise ConfigErrors([ConfigError(name, "", f"file is {size} bytes; the limit is {MAX_CONFIG_BYTES}")])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigErrors([ConfigError(name, "", f"cannot read file: {e}")]) from None
    try:
        loader = _UniqueKeyLoader(text)
        try:
            node = loader.get_single_node()  # one parse: the node tree gives lines, then the data
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigErrors([ConfigError(name, "", f"invalid YAML: {problem}", mark.line + 1 if mark else None)]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigErrors([ConfigError(name, "", "the document must be a mapping with 'targets' and/or 'proxies'")])
    return data, (_node_lines(node) if node is not None else {})


def describe_path(data: Any, loc: tuple) -> str:
    """Turn a raw location like ('proxies', 0, 'credentials', 1, 'api_key', 'secret')
    into 'proxies[billing].credentials[agent-1].secret', skipping union tags."""
    parts: list[str] = []
    cur = data
    for elem in loc:
        if isinstance(elem, int):
            name = None
            if isinstance(cur, list) and 0 <= elem < len(cur):
                cur = cur[elem]
                if isinstance(cur, Mapping) and isinstance(cur.get("name"), str):
                    name = cur["name"]
            else:
                cur = None
            suffix = f"[{name}]" if name else f"[{elem}]"
            if parts:
                parts[-1] += suffix
            else:
                parts.append(suffix)
            continue
        if isinstance(cur, Mapping) and elem not in cur and elem in (cur.get("kind"), cur.get("auth")):
            continue  # discriminated-union tag inserted by pydantic
        if isinstance(cur, Mapping) and elem not in cur and isinstance(elem, str) and ("[" in elem or "-" in elem):
            continue  # validator wrappers like 'function-after[...]'
        cur = cur.get(elem) if isinstance(cur, Mapping) else None
        parts.append(str(elem))
    return ".".join(parts)


def _raw_path(data: Any, loc: tuple) -> tuple:
    """The location restricted to keys that exist in the raw document (for line lookup)."""
    out: list = []
    cur = data
    for elem in loc:
        if isinstance(elem, int) and isinstance(cur, list) and 0 <= elem < len(cur):
            out.append(elem)
            cur = cur[elem]
        elif isinstance(cur, Mapping) and elem in cur:
            out.append(elem)
            cur = cur[elem]
    return tuple(out)


def parse_document(name: str, data: dict, lines: dict[tuple, int]) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        errors = []
        for loc, msg in humanize(e.errors()):
            errors.append(ConfigError(name, describe_path(data, loc), msg, lines.get(_raw_path(data, loc))))
        raise ConfigErrors(errors) from None


def load_files(paths: Iterable[str | Path]) -> tuple[Config, Source]:
    """Read and merge configuration files. Raises ConfigErrors naming every problem."""
    targets: list = []
    proxies: list = []
    source = Source()
    errors: list[ConfigError] = []
    for p in paths:
        path = Path(p)
        try:
            data, lines = read_yaml(path)
            config = parse_document(str(path), data, lines)
        except ConfigErrors as e:
            errors.extend(e.errors)
            continue
        by_object: dict[tuple, dict[tuple, int]] = {}  # (section, index) -> the object's own lines: one pass
        for k, v in lines.items():
            if len(k) >= 2:
                by_object.setdefault(k[:2], {})[k[2:]] = v
        for section, objs in (("targets", config.targets), ("proxies", config.proxies)):
            for i, obj in enumerate(objs):
                key = (section, obj.name)
                if key in source.files:
                    errors.append(
                        ConfigError(str(path), f"{section}[{obj.name}]", f"also defined in {source.files[key]}", lines.get((section, i)))
                    )
                    continue
                source.files[key] = str(path)
                source.base_dirs[key] = path.resolve().parent
                source.lines[key] = by_object.get((section, i), {})
        targets.extend(config.targets)
        proxies.extend(config.proxies)
    if errors:
        raise ConfigErrors(errors)
    return Config(targets=targets, proxies=proxies), source


def resolve_secret(ref: str | EnvSecret | FileSecret | ExecSecret, base_dir: Path, env: Mapping[str, str] = os.environ) -> str:
    """The secret's value. Raises ValueError with a sentence naming what is missing."""
    if isinstance(ref, str):
        return ref
    if isinstance(ref, ExecSecret):
        from rr_addon import secret_command

        return secret_command.run(command_argv(ref, base_dir), ref.timeout)
    if isinstance(ref, EnvSecret):
        value = env.get(ref.env)
        if value is None:
            raise ValueError(f"environment variable {ref.env} is not set")
        if not value:
            raise ValueError(f"environment variable {ref.env} is empty")
        return value
    path = Path(ref.file)
    if not path.is_absolute():
        path = base_dir / path
    try:
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read secret file {path}: {getattr(e, 'strerror', None) or e}") from None
    if not value:
        raise ValueError(f"secret file {path} is empty")
    return value


def command_argv(ref: ExecSecret, base_dir: Path) -> list[str]:
    """The argv a command secret runs: a relative program path (one with a `/`) is
    relative to the YAML file, made absolute so every data plane runs the same
    program whatever its working directory; a bare name is looked up in PATH."""
    program = ref.command[0]
    if "/" in program and not os.path.isabs(program):
        program = os.path.abspath(base_dir / program)
    return [program, *ref.command[1:]]
