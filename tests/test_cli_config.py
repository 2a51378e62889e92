"""`rr init`, `rr apply`, `rr export`, `rr env` against a real embedded database."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet
from typer.testing import CliRunner

from rr_addon.cli import app
from rr_addon.crypto import Keyring, master_keys
from rr_addon.store import config_store, dataplanes
from rr_addon.store.db import make_engine

UPSTREAM = "sk_live_upstream_secret_123"
CALLER = "caller-secret-456"
POLICY = """
targets:
  - name: stripe
    hosts: ["api.stripe.com"]
    credentials:
      - {name: live, kind: bearer, secret: {env: STRIPE_KEY}}
      - {name: basic, kind: basic, username: u, secret: {file: basic.txt}}
proxies:
  - name: billing
    targets: [{target: stripe, credential: live}]
    credentials:
      - {name: agent-1, auth: api_key, secret: {env: AGENT1_KEY}}
      - {name: ci, auth: basic, username: ci, secret: literal-ci-pw}
"""


@pytest.fixture
def home(make_home, tmp_path):
    make_home(init=False, width=None, env={"STRIPE_KEY": UPSTREAM, "AGENT1_KEY": CALLER, "COLUMNS": "200"})
    (tmp_path / "basic.txt").write_text("basic-file-secret\n")
    return tmp_path


def rr(*args, env=None):
    result = CliRunner().invoke(app, list(args), env=env)
    return result


def policy(home: Path, text: str = POLICY, name: str = "policy.yaml") -> Path:
    p = home / name
    p.write_text(text)
    return p


def stored(home):
    engine = make_engine()
    return config_store.read(engine, Keyring(master_keys(home)))


def test_init_is_idempotent_and_private(home):
    r = rr("init")
    assert r.exit_code == 0, r.output
    key = home / "rr.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "rr.db").stat().st_mode) == 0o600
    assert (home / "certs" / "mitmproxy-ca-cert.pem").exists()
    first = key.read_text()
    r = rr("init")
    assert r.exit_code == 0 and "exists" in r.output
    assert key.read_text() == first


def test_apply_export_roundtrip_without_secrets(home):
    rr("init")
    r = rr("apply", "-f", str(policy(home)))
    assert r.exit_code == 0, r.output
    assert "configuration version 1" in r.output
    s = stored(home)
    assert s.version == 1
    # no plaintext secret anywhere in the database files
    for f in home.glob("rr.db*"):
        raw = f.read_bytes()
        for secret in (UPSTREAM, CALLER, "basic-file-secret", "literal-ci-pw"):
            assert secret.encode() not in raw, (f, secret)
    exported = rr("export")
    assert exported.exit_code == 0
    for secret in (UPSTREAM, CALLER, "basic-file-secret", "literal-ci-pw"):
        assert secret not in exported.output
    doc = yaml.safe_load(exported.output)
    assert doc["proxies"][0]["credentials"][0] == {"name": "agent-1", "auth": "api_key"}
    # re-applying the export changes nothing: omitted secrets keep the stored ones
    again = policy(home, exported.output, "exported.yaml")
    r = rr("apply", "-f", str(again))
    assert r.exit_code == 0 and "no changes" in r.output, r.output
    assert stored(home).version == 1


def test_error_writes_nothing_and_names_file_object_field(home, monkeypatch):
    rr("init")
    rr("apply", "-f", str(policy(home)))
    before = stored(home)
    monkeypatch.delenv("STRIPE_KEY")
    changed = POLICY.replace("api.stripe.com", "api2.stripe.com")
    r = rr("apply", "-f", str(policy(home, changed)))
    assert r.exit_code == 1
    assert "environment variable STRIPE_KEY is not set" in r.output
    assert "targets[stripe].credentials[live].secret" in r.output
    assert "policy.yaml" in r.output and "nothing was written" in r.output
    after = stored(home)
    assert after.version == before.version and after.config == before.config


def test_dry_run_writes_nothing(home):
    rr("init")
    r = rr("apply", "-f", str(policy(home)), "--dry-run")
    assert r.exit_code == 0
    assert "create" in r.output and "dry run: nothing written" in r.output
    assert stored(home).version == 0


def test_changes_are_reported_and_deletes_happen(home, monkeypatch):
    rr("init")
    rr("apply", "-f", str(policy(home)))
    monkeypatch.setenv("STRIPE_KEY", "rotated")
    smaller = """
targets:
  - name: stripe
    hosts: ["api.stripe.com", "files.stripe.com"]
    credentials:
      - {name: live, kind: bearer, secret: {env: STRIPE_KEY}}
proxies:
  - name: billing
    targets: [{target: stripe, credential: live}]
    credentials:
      - {name: agent-1, auth: api_key}
"""
    r = rr("apply", "-f", str(policy(home, smaller)), "--dry-run")
    lines = {tuple(part.strip() for part in line.split("│")[1:4]) for line in r.output.splitlines() if "│" in line}
    assert ("update", "target", "stripe") in lines
    assert ("update", "target credential", "stripe/live") in lines
    assert ("delete", "target credential", "stripe/basic") in lines
    assert ("delete", "proxy credential", "billing/ci") in lines
    assert ("unchanged", "proxy credential", "billing/agent-1") in lines
    assert "hosts" in r.output and "secret" in r.output
    r = rr("apply", "-f", str(policy(home, smaller)))
    assert r.exit_code == 1 and "would delete 2 object(s)" in r.output and "--prune" in r.output
    assert stored(home).version == 1
    r = rr("apply", "-f", str(policy(home, smaller)), "--prune")
    assert r.exit_code == 0
    s = stored(home)
    assert s.version == 2
    assert [c.name for c in s.config.targets[0].credentials] == ["live"]
    assert s.target_secrets(Keyring(master_keys(home)))[("stripe", "live")] == "rotated"


def test_new_credential_needs_a_secret(home):
    rr("init")
    text = POLICY.replace("secret: {env: AGENT1_KEY}", "")
    r = rr("apply", "-f", str(policy(home, text)))
    assert r.exit_code == 1
    assert "proxies[billing].credentials[agent-1].secret" in r.output and "required for a new credential" in r.output


def test_failure_mid_write_leaves_nothing_half_written(home, monkeypatch):
    rr("init")
    rr("apply", "-f", str(policy(home)))
    before = stored(home)
    calls = {"n": 0}
    real = Keyring.encrypt

    def flaky(self, data):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk on fire")
        return real(self, data)

    monkeypatch.setattr(Keyring, "encrypt", flaky)
    monkeypatch.setenv("STRIPE_KEY", "new-secret")
    with pytest.raises(OSError, match="disk on fire"):
        CliRunner().invoke(app, ["apply", "-f", str(policy(home, POLICY.replace("api.stripe.com", "x.stripe.com")))], catch_exceptions=False)
    monkeypatch.setattr(Keyring, "encrypt", real)
    after = stored(home)
    assert after.version == before.version and after.config == before.config
    assert after.target_secrets_enc == before.target_secrets_enc


def test_database_that_cannot_be_opened(home, monkeypatch):
    monkeypatch.setenv("RR_DATABASE_URL", f"sqlite:///{home}/no/such/dir/rr.db")
    r = rr("apply", "-f", str(policy(home)))
    assert r.exit_code == 1
    assert "cannot open database" in r.output and "does not exist" in r.output
    monkeypatch.setenv("RR_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    r = rr("export")
    assert r.exit_code == 1 and "cannot open database postgresql" in r.output and "Connection refused" in r.output
    monkeypatch.setenv("RR_DATABASE_URL", "not a url")
    r = rr("export")
    assert r.exit_code == 1 and "not a valid database URL" in r.output


def test_uninitialised_database_says_run_init(home):
    r = rr("export")
    assert r.exit_code == 1 and "not initialised: run `rr init`" in r.output


def test_master_key_problems(home, monkeypatch):
    rr("init")
    rr("apply", "-f", str(policy(home)))
    os.chmod(home / "rr.key", 0o644)
    r = rr("export")
    assert r.exit_code == 1 and "readable by other users" in r.output
    os.chmod(home / "rr.key", 0o600)
    monkeypatch.setenv("RR_MASTER_KEY", Fernet.generate_key().decode())
    r = rr("export")
    assert r.exit_code == 1 and "cannot be decrypted with the configured master key" in r.output
    monkeypatch.setenv("RR_MASTER_KEY", "not-a-key")
    r = rr("export")
    assert r.exit_code == 1 and "not a Fernet key" in r.output


def test_master_key_rotation(home, monkeypatch):
    rr("init")
    old = (home / "rr.key").read_text().strip()
    rr("apply", "-f", str(policy(home)))
    new = Fernet.generate_key().decode()
    monkeypatch.setenv("RR_MASTER_KEY", f"{new},{old}")  # new key first: encrypts; old still decrypts
    r = rr("export")
    assert r.exit_code == 0
    s = stored(home)
    assert s.target_secrets(Keyring(master_keys(home)))[("stripe", "live")] == UPSTREAM


def test_env_prints_what_a_workload_needs(home):
    rr("init")
    rr("apply", "-f", str(policy(home)))
    r = rr("env", "--proxy", "billing", "--credential", "agent-1")
    assert r.exit_code == 0
    ca = home / "certs" / "mitmproxy-ca-cert.pem"
    bundle = home / "certs" / "rr-ca-bundle.pem"
    url = "http://billing:${AGENT1_KEY}@127.0.0.1:8080"
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        assert f"export {var}={url}\n" in r.output
    assert "# no running rr data plane found: assuming 127.0.0.1:8080" in r.output
    # variables that replace a client's trust store get the system CAs plus rr's; Node's adds to its own
    for var in ("SSL_CERT_FILE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO", "REQUESTS_CA_BUNDLE", "PIP_CERT", "NPM_CONFIG_CAFILE"):
        assert f"export {var}={bundle}\n" in r.output
    assert f"export NODE_EXTRA_CA_CERTS={ca}\n" in r.output
    assert f"export WGETRC={home / 'certs' / 'rr-wgetrc'}\n" in r.output
    assert (home / "certs" / "rr-wgetrc").read_text().endswith(f"ca_certificate = {bundle}\n")
    text = bundle.read_text()
    assert text.endswith(ca.read_text()) and text.count("BEGIN CERTIFICATE") > 10
    for line in ("NO_PROXY=localhost,127.0.0.1,::1", "no_proxy=localhost,127.0.0.1,::1", "GIT_HTTP_PROXY_AUTHMETHOD=basic", "NODE_USE_ENV_PROXY=1"):
        assert f"export {line}\n" in r.output
    r = rr("env", "--proxy", "billing", "--credential", "ci")
    assert "http://ci:<secret>@127.0.0.1:8080" in r.output and "literal-ci-pw" not in r.output
    r = rr("env", "--proxy", "billing", "--credential", "nope")
    assert r.exit_code == 1 and "has no credential 'nope'" in r.output


def test_env_prints_where_the_running_proxy_listens(home):
    rr("init")
    rr("apply", "-f", str(policy(home)))
    engine = make_engine(None)
    dataplanes.register(engine, "plane-a", listen="127.0.0.1:28080", config_version=1)
    r = rr("env", "--proxy", "billing", "--credential", "agent-1", "--no-proxy", "")
    assert "export HTTPS_PROXY=http://billing:${AGENT1_KEY}@127.0.0.1:28080\n" in r.output
    assert "export NO_PROXY=\n" in r.output and "no running rr data plane" not in r.output
    r = rr("env", "--proxy", "billing", "--credential", "agent-1", "--listen", "10.1.2.3:3128")
    assert "export https_proxy=http://billing:${AGENT1_KEY}@10.1.2.3:3128\n" in r.output
    dataplanes.register(engine, "plane-b", listen="0.0.0.0:3129", config_version=1)
    dataplanes.unregister(engine, "plane-a")
    r = rr("env", "--proxy", "billing", "--credential", "agent-1")
    assert "export HTTPS_PROXY=http://billing:${AGENT1_KEY}@127.0.0.1:3129\n" in r.output
    assert "# rr listens on every address (0.0.0.0:3129)" in r.output
