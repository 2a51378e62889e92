"""`rr apply` shows old → new values, and cannot wipe a deployment by accident:
deletions need --prune (or a yes on a terminal), an empty configuration needs
--allow-empty. Against a real embedded database; the terminal case runs the real
`rr` process on a pseudo-terminal."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rr_addon.cli import app
from rr_addon.crypto import Keyring, master_keys
from rr_addon.store import config_store
from rr_addon.store.db import make_engine

POLICY = """
targets:
  - name: stripe
    hosts: ["api.stripe.com"]
    credentials:
      - {name: live, kind: bearer, secret: sk_test_1}
  - name: github
    hosts: ["api.github.com"]
    credentials:
      - {name: ci, kind: bearer, secret: ghp_1}
proxies:
  - name: billing
    description: "%s"
    targets: [{target: stripe}, {target: github}]
    credentials:
      - {name: agent-1, auth: api_key, secret: caller-key-1}
    meters:
      - {name: requests, limits: {minute: 30, day: 1000}}
"""
LONG = "Charges customers for the billing team; owned by payments-platform, on call in #payments; " * 2


@pytest.fixture
def home(make_home):
    return make_home()


def rr(*args):
    return CliRunner().invoke(app, list(args))


def write(home: Path, text: str, name: str = "policy.yaml") -> str:
    (home / name).write_text(text)
    return str(home / name)


def version(home: Path) -> int:
    engine = make_engine()
    try:
        return config_store.read(engine, Keyring(master_keys(home))).version
    finally:
        engine.dispose()


def test_plan_shows_old_and_new_values(home):
    assert rr("apply", "-f", write(home, POLICY % LONG)).exit_code == 0
    changed = (POLICY % LONG.replace("#payments", "#billing-oncall", 1)).replace("minute: 30", "minute: 20").replace("day: 1000", "hour: 500")
    r = rr("apply", "-f", write(home, changed), "--dry-run")
    assert r.exit_code == 0, r.output
    assert "meters[requests].limits.minute: 30 → 20" in r.output
    assert "meters[requests].limits.day: removed (was 1000)" in r.output
    assert "meters[requests].limits.hour: added 500" in r.output
    # a long value: only the part that differs, with a little context on each side
    assert 'description: …on call in #payments; Charges cu… → …on call in #billing-oncall; Charges cu…' in r.output
    assert version(home) == 1


def test_a_new_secret_is_a_change_whose_value_is_never_shown(home):
    assert rr("apply", "-f", write(home, POLICY % "x")).exit_code == 0
    r = rr("apply", "-f", write(home, (POLICY % "x").replace("sk_test_1", "sk_test_2")), "--dry-run")
    assert "secret: changed (value not shown)" in r.output
    assert "sk_test" not in r.output


def test_deleting_objects_needs_prune_outside_a_terminal(home):
    assert rr("apply", "-f", write(home, POLICY % "x")).exit_code == 0
    without_github = (POLICY % "x").replace(
        '  - name: github\n    hosts: ["api.github.com"]\n    credentials:\n      - {name: ci, kind: bearer, secret: ghp_1}\n', ""
    ).replace(", {target: github}", "")
    r = rr("apply", "-f", write(home, without_github), "--dry-run")
    assert r.exit_code == 0
    assert "applying this deletes 2 object(s) (target github, target credential github/ci)" in r.output and "--prune" in r.output
    r = rr("apply", "-f", write(home, without_github))
    assert r.exit_code == 1
    assert "this apply would delete 2 object(s)" in r.output and "target github, target credential github/ci" in r.output
    assert "Pass --prune to delete them" in r.output and "Nothing was written" in r.output
    assert version(home) == 1
    r = rr("apply", "-f", write(home, without_github), "--prune")
    assert r.exit_code == 0, r.output
    assert version(home) == 2
    # --yes is the same consent, for scripts that say it that way
    assert rr("apply", "-f", write(home, without_github.replace("minute: 30", "minute: 31")), "--yes").exit_code == 0


def test_an_empty_configuration_is_refused_unless_asked_for(home):
    assert rr("apply", "-f", write(home, POLICY % "x")).exit_code == 0
    for text in ("", "# nothing yet\n", "targets: []\nproxies: []\n"):
        r = rr("apply", "-f", write(home, text, "empty.yaml"))
        assert r.exit_code == 1
        assert "empty.yaml declares no target and no proxy; nothing was written" in r.output and "--allow-empty" in r.output
    assert version(home) == 1
    r = rr("apply", "-f", write(home, "", "empty.yaml"), "--allow-empty")
    assert r.exit_code == 1 and "--prune" in r.output  # it would still delete everything: that needs its own consent
    r = rr("apply", "-f", write(home, "", "empty.yaml"), "--allow-empty", "--prune")
    assert r.exit_code == 0, r.output
    assert version(home) == 2


def _on_a_terminal(home: Path, args: list[str], answer: bytes) -> tuple[int, str]:
    """Run the real `rr` with stdin and stdout on a pseudo-terminal; answer its question."""
    primary, secondary = pty.openpty()
    env = {**os.environ, "RR_HOME": str(home), "COLUMNS": "250", "TERM": "dumb"}
    env.pop("RR_DATABASE_URL", None)
    env.pop("RR_MASTER_KEY", None)
    proc = subprocess.Popen([str(Path(sys.executable).parent / "rr"), *args], stdin=secondary, stdout=secondary, stderr=secondary, env=env)
    os.close(secondary)
    output = b""
    answered = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([primary], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
            if not answered and b"[y/N]" in output:
                os.write(primary, answer + b"\n")
                answered = True
        elif proc.poll() is not None:
            break
    code = proc.wait(timeout=30)
    os.close(primary)
    return code, output.decode("utf-8", "replace")


def test_on_a_terminal_deleting_asks_first(home):
    assert rr("apply", "-f", write(home, POLICY % "x")).exit_code == 0
    smaller = write(home, (POLICY % "x").replace("      - {name: agent-1, auth: api_key, secret: caller-key-1}\n", "      - {name: agent-2, auth: api_key, secret: caller-key-2}\n"))
    code, out = _on_a_terminal(home, ["apply", "-f", smaller], b"n")
    assert "delete 1 object(s) the files do not declare (proxy credential billing/agent-1)? [y/N]" in out
    assert code == 1 and "nothing was written" in out
    assert version(home) == 1
    code, out = _on_a_terminal(home, ["apply", "-f", smaller], b"y")
    assert code == 0 and "configuration version 2" in out, out
    assert version(home) == 2


def test_warnings_are_printed_and_do_not_stop_the_apply(home):
    r = rr("apply", "-f", write(home, (POLICY % "x").replace("{name: requests, limits: {minute: 30, day: 1000}}", "{name: requests}")))
    assert r.exit_code == 0, r.output
    assert "policy.yaml:18: warning: proxies[billing].meters[requests]: counts every request without a limit" in r.output
    assert version(home) == 1
