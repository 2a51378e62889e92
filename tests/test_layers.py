"""The import direction of docs/architecture.md, enforced: each module of rr_addon imports
only from its own layer and the layers below it. Imports inside functions count too
(a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from rr_addon.testing.fresh import python_prints

PACKAGE = Path(__file__).resolve().parent.parent / "rr_addon"

# Bottom to top. A module belongs to the layer of the longest prefix that names it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # leaves: constants and values with no rr imports, shared by everything
    ("leaves", ("rr_addon.core.reasons", "rr_addon.core.types", "rr_addon.core.terminal", "rr_addon.settings")),
    # the policy language: models of the YAML and the parsers/engines of its values
    ("policy", ("rr_addon.policy",)),
    # pure decisions: no I/O, no clock of its own
    ("core", ("rr_addon.core",)),
    # I/O behind small interfaces, and the tools around the language (loading files, messages, reference)
    (
        "services",
        (
            "rr_addon.config",
            "rr_addon.identity",
            "rr_addon.counters",
            "rr_addon.store",
            "rr_addon.crypto",
            "rr_addon.rotation",
            "rr_addon.audit",
            "rr_addon.metrics",
            "rr_addon.timeouts",
            "rr_addon.apply",
            "rr_addon.explanation",
            "rr_addon.reports",
            "rr_addon.secret_command",
            "rr_addon.hybrid",
        ),
    ),
    # the request pipeline (no mitmproxy)
    ("pipeline", ("rr_addon.gate",)),
    # a running data plane's lifecycle (no mitmproxy)
    ("dataplane", ("rr_addon.services", "rr_addon.reload")),
    # everything that touches mitmproxy
    ("mitm", ("rr_addon.mitm", "rr_addon.addon", "rr_addon.workers")),
    # the rr command
    ("cli", ("rr_addon.cli",)),
    # test helpers (processes, PKI, upstreams) may use anything
    ("testing", ("rr_addon.testing", "rr_addon")),
]

# Third-party packages only these layers may import.
ONLY = {
    "mitmproxy": {"mitm", "testing"},
    "sqlalchemy": {"services", "dataplane", "mitm", "cli", "testing"},
    "sqlmodel": {"services", "dataplane", "mitm", "cli", "testing"},
    "httpx": {"services", "dataplane", "mitm", "cli", "testing"},
    "typer": {"cli", "testing"},
}


def layer_of(module: str) -> int:
    best, found = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, found = len(p), i
    assert found is not None, module
    return found


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if "migrations" in parts:
            continue  # Alembic's scripts, run by Alembic
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = modules()


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:  # `from rr_addon.mitm import wire` imports the module rr_addon.mitm.wire
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in MODULES else node.module)
    return found


def test_every_module_has_a_layer():
    assert {m: LAYERS[layer_of(m)][0] for m in MODULES}  # layer_of asserts


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    mine = layer_of(module)
    up = []
    for name in sorted(imports(MODULES[module])):
        root = name.split(".")[0]
        if root == "rr_addon" and name in MODULES and name != "rr_addon":
            if layer_of(name) > mine:
                up.append(f"{name} ({LAYERS[layer_of(name)][0]})")
        elif root in ONLY and LAYERS[mine][0] not in ONLY[root]:
            up.append(f"{name} (only {', '.join(sorted(ONLY[root]))} may)")
    assert not up, f"{module} ({LAYERS[mine][0]}) imports upward: {', '.join(up)}"


def test_importing_the_core_loads_no_io():
    """Purity at import time: the decision code loads no verifier, JWT, TLS, event loop or HTTP client."""
    code = (
        "import sys, rr_addon.core.decide, rr_addon.core.snapshot, rr_addon.core.quota, rr_addon.core.responses\n"
        "bad = ('jwt', 'ssl', 'asyncio', 'httpx', 'mitmproxy', 'sqlalchemy', 'redis', 'rr_addon.identity', 'rr_addon.store', 'rr_addon.mitm')\n"
        "print(sorted(m for m in sys.modules if m.startswith(bad)))"
    )
    assert python_prints(code) == "[]"
