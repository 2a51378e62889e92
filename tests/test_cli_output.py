"""Piped `rr` tables keep their natural width: rich's 80-column fallback for
output that is not a terminal would wrap every cell (`rr audit | grep` finds
half a row)."""

from __future__ import annotations

import os
import subprocess

from rr_addon.testing.home import rr_cli
from rr_addon.testing.proxy import BIN

LONG = "a-target-with-a-name-long-enough-to-be-wrapped-at-eighty-columns"
POLICY = f"""
targets:
  - name: {LONG}
    hosts: ["api.example.com"]
    credentials: [{{name: live-credential-with-a-long-name, kind: bearer, secret: sk_x}}]
"""


def apply_dry_run(home, **extra_env) -> subprocess.CompletedProcess:
    """`rr apply --dry-run` in its own process, its output piped (as `rr … | grep` would)."""
    rr_cli(home, "init")
    (home / "policy.yaml").write_text(POLICY)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "RR_DATABASE_URL", "RR_MASTER_KEY")}
    env.update(RR_HOME=str(home), **extra_env)
    if (home / "database-url").exists():
        env["RR_DATABASE_URL"] = (home / "database-url").read_text().strip()
    out = subprocess.run([str(BIN / "rr"), "apply", "-f", str(home / "policy.yaml"), "--dry-run"], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    return out


def test_a_piped_table_is_not_squeezed_to_80_columns(tmp_path):
    out = apply_dry_run(tmp_path)
    rows = [line for line in out.stdout.splitlines() if LONG in line]
    assert rows and "live-credential-with-a-long-name" in out.stdout
    assert any(len(line) > 80 for line in out.stdout.splitlines())


def test_columns_still_decides_when_set(tmp_path):
    out = apply_dry_run(tmp_path, COLUMNS="60")
    assert LONG not in out.stdout  # wrapped to fit
    assert all(len(line) <= 60 for line in out.stdout.splitlines())


def test_the_console_reads_columns_when_it_prints_not_when_it_is_made(monkeypatch):
    """pytest-xdist workers (and some shells) export COLUMNS=80: a console made at import
    kept that width for every later command, whatever COLUMNS the command ran with."""
    from rr_addon.cli.consoles import Output

    monkeypatch.setenv("COLUMNS", "80")
    console = Output()
    monkeypatch.setenv("COLUMNS", "200")
    assert console.width == 200
    assert Output(width=120).width == 120  # an explicit width still decides
