"""`rr` outside an initialised home: every command that needs one says how to
point at one (RR_HOME, RR_DATABASE_URL) and leaves the directory as it found it."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from rr_addon.cli import app

COMMANDS = [
    ["export"],
    ["apply", "-f", "policy.yaml", "--dry-run"],
    ["run"],
    ["env", "--proxy", "p", "--credential", "c"],
    ["explain", "--credential", "p/c", "GET", "https://api.example.com/"],
    ["usage"],
    ["audit"],
    ["status"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=[a[0] for a in COMMANDS])
def test_a_command_outside_a_home_says_how_to_point_at_one_and_creates_nothing(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    for name in ("RR_HOME", "RR_DATABASE_URL", "RR_MASTER_KEY", "RR_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "policy.yaml").write_text("targets: []\n")
    result = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert f"no rr database at {tmp_path / 'rr.db'}" in text
    assert "run `rr init`" in text and "RR_HOME=" in text and "RR_DATABASE_URL=" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.yaml"]
