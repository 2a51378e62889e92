"""SecretWatcher (rr_addon.rotation): a replaced value is scrubbed for GRACE
seconds and then dropped; an unreadable or empty file keeps the last good value."""

from __future__ import annotations

from pathlib import Path

from rr_addon.policy import schema
from rr_addon.core.snapshot import compile_snapshot
from rr_addon.rotation import GRACE, WATCHED, SecretWatcher

CONFIG = schema.Config.model_validate(
    {"targets": [{"name": "api", "hosts": ["api.example.com"], "credentials": [{"name": "live", "kind": "bearer"}]}]}
)


def scrubbed(w: SecretWatcher) -> set[bytes]:
    snap = compile_snapshot(CONFIG, version=1, hmac_key=b"k" * 32, target_secrets=w.values(), caller_digests={}, previous_secrets=w.previous())
    return {s for s, _ in snap.targets["api"].credentials["live"].injection.scrub}


def test_old_value_scrubbed_during_grace_then_dropped(tmp_path):
    f = tmp_path / "token"
    f.write_text("sk_one\n")
    w = SecretWatcher()
    w.update({("targets", "api", "live"): f"{WATCHED}{f}"}, {("api", "live"): "sk_one"})
    assert w.poll(now=1000.0) is False  # the file holds what apply stored
    f.write_text("sk_two\n")
    assert w.poll(now=1001.0) is True
    assert w.values() == {("api", "live"): "sk_two"} and w.watched[("api", "live")].rotated_at == 1001.0
    assert {b"sk_one", b"sk_two"} <= scrubbed(w)
    assert w.poll(now=1001.0 + GRACE - 1) is False
    assert w.poll(now=1001.0 + GRACE + 1) is True  # the snapshot must be rebuilt without it
    assert b"sk_one" not in scrubbed(w) and b"sk_two" in scrubbed(w)


def test_unreadable_or_empty_file_keeps_last_good_value(tmp_path):
    f = tmp_path / "token"
    f.write_text("sk_good\n")
    w = SecretWatcher()
    w.update({("targets", "api", "live"): f"{WATCHED}{f}"}, {})
    assert w.poll(now=1.0) is True
    f.write_text("\n")
    assert w.poll(now=2.0) is False and w.values() == {("api", "live"): "sk_good"}
    assert w.status()["api/live"]["readable"] is False and "empty" in w.status()["api/live"]["error"]
    f.unlink()
    assert w.poll(now=3.0) is False and w.values() == {("api", "live"): "sk_good"}
    assert "cannot read secret file" in w.status()["api/live"]["error"]
    assert "sk_good" not in repr(w.status())


def test_a_fifo_or_an_oversized_file_is_refused_without_blocking(tmp_path):
    """A FIFO at the secret's path would block the read (and with it reloads) forever."""
    import os

    import pytest

    from rr_addon import rotation

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="is not a regular file"):
        rotation._read(str(fifo))
    big = tmp_path / "big"
    big.write_bytes(b"x" * ((1 << 20) + 1))
    with pytest.raises(ValueError, match="is larger than"):
        rotation._read(str(big))


def test_the_grace_period_survives_a_change_of_the_watched_source(tmp_path):
    """The configuration moves the watch to another file (or stops watching): the value
    read until then may still be echoed, so it stays scrubbed for GRACE seconds."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("sk_from_a\n")
    b.write_text("sk_from_b\n")
    w = SecretWatcher()
    w.update({("targets", "api", "live"): f"{WATCHED}{a}"}, {("api", "live"): "sk_from_a"}, now=1000.0)
    w.poll(now=1000.0)
    w.update({("targets", "api", "live"): f"{WATCHED}{b}"}, {("api", "live"): "sk_from_b"}, now=1010.0)
    w.poll(now=1010.0)
    assert w.values() == {("api", "live"): "sk_from_b"}
    assert {b"sk_from_a", b"sk_from_b"} <= scrubbed(w)
    w.update({}, {}, now=1020.0)  # no longer watched (e.g. a literal secret now): still scrubbed
    assert w.previous() == {("api", "live"): ("sk_from_a", "sk_from_b")}
    assert w.poll(now=1010.0 + GRACE + 1) is True and w.previous() == {("api", "live"): ("sk_from_b",)}
    assert w.poll(now=1020.0 + GRACE + 1) is True and w.previous() == {}  # then dropped: rebuild without them


def script(tmp_path) -> tuple[list[str], Path]:
    import sys

    state = tmp_path / "state"
    prog = tmp_path / "print_secret.py"
    prog.write_text(
        "import os, sys, time\n"
        "state = open(sys.argv[1]).read().strip()\n"
        "print('debug: the value is', state, file=sys.stderr)\n"
        "if state == 'FAIL': sys.exit(3)\n"
        "if state == 'HANG':\n"
        "    open(sys.argv[1] + '.pid', 'w').write(str(os.getpid())); time.sleep(120)\n"
        "if state != 'EMPTY': print(state)\n"
    )
    return [sys.executable, str(prog), str(state)], state


def test_a_command_source_is_run_every_refresh_and_keeps_the_last_good_value(tmp_path):
    from rr_addon.rotation import exec_source

    argv, state = script(tmp_path)
    state.write_text("sk_cmd_one")
    w = SecretWatcher()
    w.update({("targets", "api", "live"): exec_source(argv, 5.0, 60.0)}, {("api", "live"): "sk_cmd_one"})
    assert w.poll(now=1000.0) is False and w.values() == {("api", "live"): "sk_cmd_one"}
    state.write_text("sk_cmd_two")
    assert w.poll(now=1030.0) is False  # not due before its refresh
    assert w.poll(now=1060.0) is True and w.values() == {("api", "live"): "sk_cmd_two"}
    assert {b"sk_cmd_one", b"sk_cmd_two"} <= scrubbed(w)
    for bad, error in (("FAIL", "exited with status 3"), ("EMPTY", "printed nothing")):
        state.write_text(bad)
        w.watched[("api", "live")].next_run = 0
        assert w.poll(now=1100.0) is False and w.values() == {("api", "live"): "sk_cmd_two"}
        status = w.status()["api/live"]
        assert status["readable"] is False and error in status["error"] and "sk_cmd" not in repr(status)
        assert w.watched[("api", "live")].next_run == 1100.0 + 10.0  # retried sooner than its refresh
    assert w.status()["api/live"]["path"] == "exec: " + " ".join(argv)


def test_a_command_that_hangs_is_killed_at_its_timeout(tmp_path):
    import os

    import pytest

    from rr_addon import secret_command

    argv, state = script(tmp_path)
    state.write_text("HANG")
    with pytest.raises(ValueError, match=r"no answer within 0.5 s \(killed\)"):
        secret_command.run(argv, 0.5)
    pid = int((tmp_path / "state.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone, not left behind


def test_a_command_never_goes_through_a_shell(tmp_path):
    import pytest

    from rr_addon import secret_command

    marker = tmp_path / "pwned"
    with pytest.raises(ValueError, match="cannot run it"):
        secret_command.run([f"true; touch {marker}"], 2)
    assert not marker.exists()
