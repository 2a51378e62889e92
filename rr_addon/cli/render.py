"""Pure rich renderers for the CLI: data in, renderable out."""

from __future__ import annotations

from typing import Iterable

from rich.table import Table
from rich.text import Text

from rr_addon.config.load import ConfigError
from rr_addon.policy.costs import money
from rr_addon.store.config_store import Change

ACTION_STYLE = {"create": "green", "update": "yellow", "delete": "red", "unchanged": "dim"}


def changes_table(changes: Iterable[Change], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("action")
    table.add_column("object")
    table.add_column("name")
    table.add_column("changes (old → new)", overflow="fold")
    changes = list(changes)
    unchanged = [c for c in changes if c.action == "unchanged"]
    shown = changes if len(unchanged) <= 20 else [c for c in changes if c.action != "unchanged"]
    for c in shown:
        style = ACTION_STYLE.get(c.action, "")
        detail = "\n".join(str(f) for f in c.fields) or c.detail
        table.add_row(Text(c.action, style=style), Text(c.kind), Text(c.name), Text(detail))  # never parsed as markup
    if len(shown) < len(changes):
        table.add_row(Text("unchanged", style="dim"), f"{len(unchanged)} objects", "", "")
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


def warnings_text(warnings: Iterable[ConfigError]) -> Text:
    """Like errors_text, for configurations rr accepts but that do nothing (rr_addon.config.validate.warnings)
    or probably do not mean what they say (rr_addon.config.path_warnings)."""
    text = Text()
    for w in warnings:
        where = w.file + (f":{w.line}" if w.line else "")
        text.append(where + ": ", style="bold")
        text.append("warning: ", style="bold yellow")
        if w.path:
            text.append(w.path + ": ", style="cyan")
        text.append(w.message + "\n")
    return text


def env_lines(variables: dict[str, str], notes: list[str]) -> str:
    lines = [f"# {n}" for n in notes]
    lines += [f"export {k}={v}" for k, v in variables.items()]
    return "\n".join(lines)


def usage_table(rows, now: float) -> Table:
    table = Table(title="usage and meters (current windows)", title_justify="left")
    for col, justify in (("proxy", "left"), ("meter", "left"), ("credential", "left"), ("window", "left"), ("used", "right"), ("limit", "right"), ("remaining", "right"), ("resets in", "right"), ("unmeasured", "right")):
        table.add_column(col, justify=justify, no_wrap=col in ("proxy", "meter", "credential"))  # names stay whole
    for r in rows:
        remaining = r.remaining
        style = "red" if remaining == 0 else ""
        table.add_row(
            r.proxy,
            r.meter or Text("usage", style="dim"),
            "(all)" if r.subject == "-" else r.subject,
            r.window.kind,
            _count(r.used, r.currency),
            "-" if r.limit is None else _count(r.limit, r.currency),
            Text("-" if remaining is None else _count(remaining, r.currency), style=style),
            _duration(r.window.resets_in(now)),
            "-" if r.unmeasured is None else Text(str(r.unmeasured), style="yellow" if r.unmeasured else ""),
        )
    return table


def _count(value: int, currency: str | None) -> str:
    """A counter as shown: a number, or money (micro-units) with its currency."""
    return str(value) if currency is None else money(value, currency) or "-"


def _duration(seconds: int) -> str:
    """2d 3h, 4h 5m, 6m 7s, 8s."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"
