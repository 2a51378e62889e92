"""The configuration store can never be left unloadable (issue 23, items 1-2):
`rr apply` loads the rows it writes the way a data plane does and refuses what
would not load; a row that does not load (written by an older rr, or by hand)
gives `rr export` a one-line error naming it, and a valid `rr apply` replaces
it. Key material in an inline JWKS is refused: it would be stored and exported
in clear."""

from __future__ import annotations

import json

import pytest
import yaml
from sqlalchemy import text
from typer.testing import CliRunner

from rr_addon.cli import app
from rr_addon.crypto import Keyring, master_keys
from rr_addon.store import config_store
from rr_addon.store.db import make_engine

HMAC = "hmac-key-for-hs256-that-is-long-enough-0123456789"
POLICY = f"""
targets:
  - name: api
    hosts: ["api.example.com"]
    credentials:
      - {{name: static, kind: bearer, secret: sk_static}}
proxies:
  - name: agents
    targets: [{{target: api}}]
    credentials:
      - {{name: key, auth: api_key, secret: agent-key}}
      - name: hs
        auth: jwt_verify
        secret: {{env: HMAC_KEY}}
        issuer: me
        audience: api
"""


@pytest.fixture
def home(make_home):
    return make_home(env={"HMAC_KEY": HMAC, "COLUMNS": "200"})


def rr(*args):
    return CliRunner().invoke(app, list(args))


def write(home, text_: str, name: str = "policy.yaml") -> str:
    (home / name).write_text(text_)
    return str(home / name)


def version() -> int:
    return config_store.current_version(make_engine())


def stored(home):
    return config_store.read(make_engine(), Keyring(master_keys(home)))


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def test_hmac_jwt_verify_is_stored_encrypted_and_round_trips(home):
    r = rr("apply", "-f", write(home, POLICY))
    assert r.exit_code == 0, r.output
    s = stored(home)
    assert s.caller_secrets(Keyring(master_keys(home)))[("agents", "hs")] == HMAC
    for f in home.glob("rr.db*"):
        assert HMAC.encode() not in f.read_bytes()
    exported = rr("export")
    assert exported.exit_code == 0, exported.output
    assert HMAC not in exported.output
    hs = yaml.safe_load(exported.output)["proxies"][0]["credentials"][1]
    assert hs == {"name": "hs", "algorithms": ["HS256"], "auth": "jwt_verify", "issuer": "me", "audience": "api"}
    # the export as it is keeps the stored key; with the key given again, nothing changes either
    r = rr("apply", "-f", write(home, exported.output, "exported.yaml"))
    assert r.exit_code == 0 and "no changes" in r.output, r.output
    again = yaml.safe_load(exported.output)
    again["proxies"][0]["credentials"][1]["secret"] = {"env": "HMAC_KEY"}
    again["proxies"][0]["credentials"][0]["secret"] = "agent-key"
    again["targets"][0]["credentials"][0]["secret"] = "sk_static"
    r = rr("apply", "-f", write(home, yaml.safe_dump(again), "again.yaml"))
    assert r.exit_code == 0 and "no changes" in r.output, r.output
    assert version() == 1
    # what a data plane loads
    snap = config_store.load_snapshot(make_engine(), Keyring(master_keys(home)))
    assert {(v.proxy, v.name): v.secret for v in snap.verifiers}[("agents", "hs")] == HMAC


def test_a_new_hmac_credential_without_its_key_is_refused(home):
    no_key = POLICY.replace("        secret: {env: HMAC_KEY}\n", "        algorithms: [HS256]\n")
    r = rr("apply", "-f", write(home, no_key))
    assert r.exit_code == 1
    assert "proxies[agents].credentials[hs].secret: secret (the HMAC key) is required for a new credential" in r.output
    assert version() == 0


@pytest.mark.parametrize("dry_run", [False, True], ids=["apply", "dry-run"])
def test_apply_refuses_what_a_data_plane_could_not_load(home, monkeypatch, dry_run):
    """A 10-byte HS256 key passes the schema; building the verifier, as every
    proxy does on reload, refuses it. Apply runs that same code first."""
    assert rr("apply", "-f", write(home, POLICY)).exit_code == 0
    monkeypatch.setenv("HMAC_KEY", "short-key!")
    r = rr("apply", "-f", write(home, POLICY.replace("audience: api", "audience: api2")), *(["--dry-run"] if dry_run else []))
    assert r.exit_code == 1, r.output
    assert "policy.yaml: configuration would not load: proxies[agents].credentials[hs]: an HMAC secret for HS256 must be at least 32 bytes" in r.output
    assert "nothing was written" in r.output
    assert version() == 1
    assert stored(home).caller_secrets(Keyring(master_keys(home)))[("agents", "hs")] == HMAC


BREAKAGES = [
    # (table, name, JSON path, value, object named in the error)
    ("rr_proxy_credential", "hs", "$.algorithms", ["RS256"], "stored proxy credential agents/hs does not load"),
    ("rr_target_credential", "static", "$.kind", "carrier-pigeon", "stored target credential api/static does not load"),
    ("rr_proxy", "agents", "$.mode", "sometimes", "stored proxy agents does not load: mode: Input should be 'enforce' or 'report'"),
    ("rr_target", "api", "$.hosts", ["a b c"], "stored target api does not load: hosts"),
]


@pytest.mark.parametrize(("table", "name", "path", "value", "message"), BREAKAGES, ids=[b[0] for b in BREAKAGES])
def test_a_row_that_does_not_load_is_named_and_repaired_by_apply(home, table, name, path, value, message):
    assert rr("apply", "-f", write(home, POLICY)).exit_code == 0
    engine = make_engine()
    with engine.begin() as conn:  # what an older rr, or a hand edit, could leave behind
        n = conn.execute(
            text(f"UPDATE {table} SET spec = json_set(spec, :path, json(:value)) WHERE name = :name"),
            {"path": path, "value": json.dumps(value), "name": name},
        ).rowcount
        assert n == 1
    engine.dispose()
    for command in (["export"], ["env", "--proxy", "agents", "--credential", "key"], ["explain", "GET", "https://api.example.com/", "--credential", "agents/key"]):
        line = one_line_error(rr(*command))
        assert line.startswith(f"rr: {message}") and line.endswith("(run `rr apply` with a valid configuration to replace it)"), line
    dry = rr("apply", "-f", write(home, POLICY), "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "replaces a stored row that does not load" in dry.output and "dry run: nothing written" in dry.output
    assert version() == 1
    r = rr("apply", "-f", write(home, POLICY))
    assert r.exit_code == 0 and "configuration version 2" in r.output, r.output
    assert rr("export").exit_code == 0
    snap = config_store.load_snapshot(make_engine(), Keyring(master_keys(home)))
    assert {(v.proxy, v.name): v.secret for v in snap.verifiers}[("agents", "hs")] == HMAC and snap.targets["api"].credentials["static"].kind == "bearer"


def test_a_broken_row_no_longer_wanted_is_deleted(home):
    assert rr("apply", "-f", write(home, POLICY)).exit_code == 0
    engine = make_engine()
    with engine.begin() as conn:
        conn.execute(text("UPDATE rr_proxy_credential SET spec = json_set(spec, '$.auth', 'telepathy') WHERE name = 'key'"))
    engine.dispose()
    without = POLICY.replace("      - {name: key, auth: api_key, secret: agent-key}\n", "")
    r = rr("apply", "-f", write(home, without))
    assert r.exit_code == 1 and "would delete 1 object(s)" in r.output and "--prune" in r.output  # a deletion needs consent
    r = rr("apply", "-f", write(home, without), "--prune")
    assert r.exit_code == 0, r.output
    assert "delete" in r.output and "agents/key" in r.output and "a stored row that does not load" in r.output
    assert [c.name for c in stored(home).config.proxies[0].credentials] == ["hs"]


def test_inline_symmetric_jwks_is_refused_and_never_stored(home):
    k = "c3ltbWV0cmljLWtleS1tYXRlcmlhbC10aGF0LWlzLWxvbmctZW5vdWdo"
    inline = POLICY.replace("        secret: {env: HMAC_KEY}\n", f"        algorithms: [HS256]\n        jwks: {{keys: [{{kty: oct, k: {k}}}]}}\n")
    r = rr("apply", "-f", write(home, inline))
    assert r.exit_code == 1
    assert "keys[0] is a symmetric key (kty 'oct'), which is a secret" in r.output and "give the HMAC key as 'secret:'" in r.output
    assert version() == 0
    for f in home.glob("rr.db*"):
        assert k.encode() not in f.read_bytes()


OAUTH_POLICY = """
targets:
  - name: api
    hosts: ["api.example.com"]
    credentials:
      - {name: cc, kind: oauth2_client_credentials, token_url: "http://127.0.0.1:9/token", client_id: rr, client_secret: literal-cc-SECRET}
proxies:
  - name: agents
    targets: [{target: api}]
    credentials:
      - {name: opaque, auth: oauth2, introspection_url: "http://127.0.0.1:9/introspect", client_id: rr, client_secret: literal-introspection-SECRET}
"""


def test_client_secrets_are_never_stored_in_clear_nor_exported(home):
    r = rr("apply", "-f", write(home, OAUTH_POLICY))
    assert r.exit_code == 0, r.output
    exported = rr("export")
    assert exported.exit_code == 0, exported.output
    for secret in ("literal-cc-SECRET", "literal-introspection-SECRET"):
        assert secret not in exported.output
        for f in home.glob("rr.db*"):
            assert secret.encode() not in f.read_bytes(), f
    keyring = Keyring(master_keys(home))
    s = stored(home)
    assert s.target_secrets(keyring)[("api", "cc")] == "literal-cc-SECRET"
    assert s.caller_secrets(keyring)[("agents", "opaque")] == "literal-introspection-SECRET"
    r = rr("apply", "-f", write(home, exported.output, "exported.yaml"))
    assert r.exit_code == 0 and "no changes" in r.output, r.output


def test_a_secret_an_older_rr_left_in_a_spec_is_not_exported_and_apply_removes_it(home):
    assert rr("apply", "-f", write(home, OAUTH_POLICY)).exit_code == 0
    engine = make_engine()
    with engine.begin() as conn:  # what rr wrote before client_secret was kept out of specs
        conn.execute(text("UPDATE rr_proxy_credential SET spec = json_set(spec, '$.client_secret', 'old-clear-SECRET')"))
    engine.dispose()
    exported = rr("export")
    assert exported.exit_code == 0 and "old-clear-SECRET" not in exported.output
    r = rr("apply", "-f", write(home, OAUTH_POLICY))
    assert r.exit_code == 0, r.output
    assert "agents/opaque" in r.output and "removes a secret stored in clear (kept encrypted)" in r.output
    engine = make_engine()
    with engine.connect() as conn:
        assert "old-clear-SECRET" not in str(conn.execute(text("SELECT spec FROM rr_proxy_credential")).all())
    engine.dispose()
