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


def errors_text(errors: Iterable[ConfigError]) -> Text:
    """Compiler-style lines (file:line: object.field: problem): easy to read, grep and click."""
    errors = list(errors)
    text = Text(f"{len(errors)} configuration error{'s' if len(errors) != 1 else ''}; nothing was written\n", style="bold red")
    for e in errors:
        where = e.file + (f":{e.line}" if e.line else "")
        text.append(where + ": ", style="bold")
        if e.path:
            text.append(e.path + ": ", style="cyan")
        text.append(e.message + "\n")
    return text


def env_lines(variables: dict[str, str], notes: list[str]) -> str:
    lines = [f"# {n}" for n in notes]
    lines += [f"export {k}={v}" for k, v in variables.items()]
    return "\n".join(lines)
