"""The decision trace as a tree (rich), for `rr explain`, `rr.explain` and mitmweb's rr view."""

from __future__ import annotations

import io

from rich.text import Text
from rich.tree import Tree


def explanation_tree(title: str, ex) -> Tree:
    """The decision trace of `rr explain` / `rr.explain` (an rr_addon.core.decide.Explanation)."""
    d = ex.outcome.decision
    tree = Tree(Text(title, style="bold"))
    for step, what in ex.steps:
        tree.add(Text.assemble((f"{step} ", "cyan"), what))
    for scope in ex.scopes:
        r = scope.result
        style = "green" if r.allowed else "red"
        label = Text.assemble(("scope ", "cyan"), (scope.scope, "bold"), ": ", (r.effect, style), f" — {r.reason}" + (f" ({r.rule})" if r.rule else ""))
        node = tree.add(label)
        if not scope.rules:
            node.add(Text("no rules", style="dim"))
        for rule in scope.rules:
            mark = ("✓ ", "green") if rule.matched else ("✗ ", "dim")
            why = "matched" if rule.matched else f"{rule.failed} did not match"
            if rule.path:  # which path form matched, or did not
                why += f"; {rule.path}"
            if rule.mcp:  # which JSON-RPC calls matched the mcp condition
                why += f"; {rule.mcp}"
            node.add(Text.assemble(mark, f"{rule.rule} ", (rule.effect, "red" if rule.effect == "deny" else "green"), f" p{rule.priority}  {why}"))
    if d.allowed:
        result = Text.assemble(("result ", "cyan"), ("allow", "bold green"), f" — {d.reason}")
    else:
        where = f" ({d.scope} rule {d.rule})" if d.rule else (f" ({d.scope})" if d.scope else "")
        verdict = "would deny (report mode): forwarded" if ex.outcome.report_only else f"{d.status} {d.code}"
        result = Text.assemble(("result ", "cyan"), (verdict, "bold red"), f" — {d.reason}{where}" + (f": {d.detail}" if d.detail else ""))
    tree.add(result)
    return tree


def plain(renderable) -> str:
    """Render without colour, for logs and mitmproxy's command bar."""
    from rich.console import Console

    console = Console(width=120, record=True, color_system=None, file=io.StringIO())
    console.print(renderable)
    return console.export_text()
