"""The policy core never imports mitmproxy, sqlmodel/SQLAlchemy or rich, and does no I/O at import."""

import pkgutil
import subprocess
import sys

import rr_addon.core

FORBIDDEN = ("mitmproxy", "sqlmodel", "sqlalchemy", "rich", "redis", "httpx", "alembic", "typer")


def test_core_imports_nothing_forbidden():
    modules = [f"rr_addon.core.{m.name}" for m in pkgutil.iter_modules(rr_addon.core.__path__)]
    assert len(modules) >= 7
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        + "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core pulled in: {out.stdout.strip()}"
