"""SecretWatcher (rr_addon.rotation): a replaced value is scrubbed for GRACE
seconds and then dropped; an unreadable or empty file keeps the last good value."""

from __future__ import annotations

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
