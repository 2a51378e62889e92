"""`rr apply` with `{file: PATH, watch: true}` (issue 19, item 2): the value is
still read once and stored, the source names the absolute path (not resolved
through symlinks), turning the watch on or off is a change even with the same
value, and a caller credential cannot be watched."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from rr_addon.cli import app
from rr_addon.crypto import Keyring, master_keys
from rr_addon.store import config_store
from rr_addon.store.db import make_engine

POLICY = """
targets:
  - name: api
    hosts: ["api.example.com"]
    credentials:
      - {{name: live, kind: bearer, secret: {secret}}}
proxies:
  - name: p
    targets: [{{target: api}}]
    credentials:
      - {{name: a, auth: api_key, secret: {caller}}}
"""


@pytest.fixture
def home(make_home, tmp_path):
    make_home()
    (tmp_path / "mount").mkdir()
    (tmp_path / "mount" / "..v1").mkdir()
    (tmp_path / "mount" / "..v1" / "token").write_text("sk_watched_1\n")
    (tmp_path / "mount" / "..data").symlink_to("..v1")
    (tmp_path / "mount" / "token").symlink_to("..data/token")
    return tmp_path


def rr(*args):
    return CliRunner().invoke(app, list(args))


def apply(home, secret: str, caller: str = "KEY_a"):
    (home / "p.yaml").write_text(POLICY.format(secret=secret, caller=caller))
    return rr("apply", "-f", str(home / "p.yaml"))


def stored(home):
    keyring = Keyring(master_keys(home))
    return config_store.read(make_engine(None, existing=True), keyring), keyring


def test_watched_source_is_absolute_unresolved_and_value_stored(home):
    result = apply(home, "{file: mount/token, watch: true}")  # relative to the YAML file
    assert result.exit_code == 0, result.output
    s, keyring = stored(home)
    assert s.sources[("targets", "api", "live")] == f"watched-file:{home}/mount/token"
    assert s.target_secrets(keyring)[("api", "live")] == "sk_watched_1"


def test_turning_the_watch_on_and_off_is_a_change_with_the_same_value(home):
    assert apply(home, "{file: mount/token}").exit_code == 0
    assert stored(home)[0].sources[("targets", "api", "live")] == "file:mount/token"
    assert apply(home, "{file: mount/token, watch: true}").exit_code == 0
    assert stored(home)[0].sources[("targets", "api", "live")] == f"watched-file:{home}/mount/token"
    assert apply(home, "{file: mount/token, watch: false}").exit_code == 0
    assert stored(home)[0].sources[("targets", "api", "live")] == "file:mount/token"


def test_a_caller_secret_cannot_be_watched(home):
    result = apply(home, "sk_1", caller="{file: mount/token, watch: true}")
    assert result.exit_code != 0
    assert "proxies[p].credentials[a].secret" in result.output and "target credentials only" in result.output


def test_watch_must_be_a_boolean(home):
    result = apply(home, "{file: mount/token, watch: maybe}")
    assert result.exit_code != 0 and "{file: PATH, watch: true}" in result.output
