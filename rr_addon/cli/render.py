"""Pure rich renderers for the CLI: data in, renderable out."""

from __future__ import annotations

from typing import Iterable

from rich.table import Table
from rich.text import Text

from rr_addon.config.load import ConfigError
from rr_addon.store.config_store import Change

ACTION_STYLE = {"create": "green", "update": "yellow", "delete": "red", "unchanged": "dim"}


def changes_table(changes: Iterable[Change], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("action")
    table.add_column("object")
    table.add_column("name")
    table.add_column("changed fields")
    for c in changes:
        style = ACTION_STYLE.get(c.action, "")
        table.add_row(Text(c.action, style=style), c.kind, c.name, c.detail)
    return table


def errors_table(errors: Iterable[ConfigError]) -> Table:
    table = Table(title="configuration errors: nothing was written", title_justify="left", title_style="bold red")
    table.add_column("file")
    table.add_column("line", justify="right")
    table.add_column("object.field")
    table.add_column("problem", style="red")
    for e in errors:
        table.add_row(e.file, str(e.line or ""), e.path or "-", e.message)
    return table


def env_lines(variables: dict[str, str], notes: list[str]) -> str:
    lines = [f"# {n}" for n in notes]
    lines += [f"export {k}={v}" for k, v in variables.items()]
    return "\n".join(lines)
