"""Configuring the upstream OAuth grants: clear errors for combinations that
cannot work, secrets stored encrypted as one bundle (all given, or none to keep
the stored ones), never exported, and keys checked at `rr apply`, not on a request."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from rr_addon.policy.schema import Target
from rr_addon.crypto import Keyring, master_keys
from rr_addon.store import config_store
from rr_addon.store.db import make_engine
from rr_addon.testing.home import rr_cli
from rr_addon.testing.idp import pem, pooled_key, service_account

URL = "https://login.example.com/token"


def error(**fields) -> str:
    with pytest.raises(ValidationError) as e:
        Target.model_validate({"name": "api", "hosts": ["api.example"], "credentials": [{"name": "c", **fields}]})
    return e.value.errors()[0]["msg"].removeprefix("Value error, ")


@pytest.mark.parametrize(
    "fields, expected",
    [
        (dict(kind="oauth2_refresh_token", token_url=URL, client_id="rr", refresh_token="r"), "give all of refresh_token, client_secret or none of them"),
        (dict(kind="oauth2_refresh_token", token_url=URL, client_id="rr", client_secret="s"), "missing: refresh_token"),
        (dict(kind="oauth2_refresh_token", token_url=URL, client_id="rr", client_auth="private_key_jwt", client_secret="s", refresh_token="r"), "authenticates with 'client_key'"),
        (dict(kind="oauth2_refresh_token", token_url=URL, client_id="rr", client_auth="none", client_secret="s", refresh_token="r"), "public client) takes neither"),
        (dict(kind="oauth2_refresh_token", token_url=URL, client_id="rr", client_secret="s", refresh_token={"file": "rt", "watch": True}), "`watch: true` is not supported"),
        (dict(kind="oauth2_refresh_token", token_url=URL, client_id="rr", secret="s"), "not 'secret'"),
        (dict(kind="oauth2_refresh_token", token_url="http://login.example.com/token", client_id="rr"), "plain http is only allowed to a loopback"),
        (dict(kind="oauth2_jwt_bearer", token_url=URL, service_account="sa", issuer="me"), "not both"),
        (dict(kind="oauth2_jwt_bearer", token_url=URL, private_key="k"), "go with an explicit 'issuer'"),
        (dict(kind="oauth2_jwt_bearer", token_url=URL, service_account="sa", algorithm="ES256"), "a service account signs with RS256"),
        (dict(kind="oauth2_jwt_bearer", token_url=URL, service_account="sa", client_auth="basic"), "needs a 'client_id'"),
        (dict(kind="oauth2_client_credentials", token_url=URL, client_id="rr", client_auth="none"), "needs client authentication"),
        (dict(kind="oauth2_client_credentials", token_url=URL, client_id="rr", client_key="k"), "'client_key' is for private_key_jwt"),
        (dict(kind="oauth2_client_credentials", token_url=URL, client_id="rr", client_secret="s", client_key_id="k1"), "set client_auth: private_key_jwt"),
    ],
)
def test_combinations_that_cannot_work_are_refused_with_a_sentence(fields, expected):
    assert expected in error(**fields)


POLICY = """
targets:
  - name: crm
    hosts: [crm.example]
    credentials:
      - name: user
        kind: oauth2_refresh_token
        token_url: https://login.example.com/token
        client_id: rr
        %s
      - name: gcp
        kind: oauth2_jwt_bearer
        token_url: %s
        %s
proxies: []
"""
FULL_USER = "client_secret: {env: CS}\n        refresh_token: {env: RT}"
FULL_GCP = "service_account: {file: sa.json}"


def apply(home, user: str, gcp: str, env: dict, token_url: str = "https://oauth2.googleapis.com/token", check: bool = True):
    (home / "policy.yaml").write_text(POLICY % (user, token_url, gcp))
    return rr_cli(home, "apply", "-f", str(home / "policy.yaml"), env=env, check=check)


def stored_secrets(home) -> dict:
    engine = make_engine(f"sqlite:///{home / 'rr.db'}", existing=True)
    try:
        return config_store.read(engine, Keyring(master_keys(home))).target_secrets(Keyring(master_keys(home)))
    finally:
        engine.dispose()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.delenv("RR_DATABASE_URL", raising=False)
    (tmp_path / "sa.json").write_text(service_account(pooled_key("RSA"), token_uri="https://oauth2.googleapis.com/token"))
    rr_cli(tmp_path, "init")
    return tmp_path


def test_secrets_are_one_encrypted_bundle_kept_when_omitted_and_never_exported(home):
    env = {"CS": "client-SECRET-1", "RT": "refresh-TOKEN-1"}
    apply(home, FULL_USER, FULL_GCP, env)
    secrets = stored_secrets(home)
    assert json.loads(secrets[("crm", "user")]) == {"client_secret": "client-SECRET-1", "refresh_token": "refresh-TOKEN-1"}
    assert json.loads(secrets[("crm", "gcp")])["service_account"].startswith("{")
    raw = (home / "rr.db").read_bytes()
    assert b"refresh-TOKEN-1" not in raw and b"client-SECRET-1" not in raw and b"PRIVATE KEY" not in raw
    exported = rr_cli(home, "export").output
    assert "refresh-TOKEN-1" not in exported and "PRIVATE KEY" not in exported and "refresh_token:" not in exported
    # omitted: the stored bundle is kept (and the export applies again as it is)
    result = apply(home, "", "", {})
    assert "unchanged" in result.output or "no changes" in result.output.lower(), result.output
    assert stored_secrets(home) == secrets


def test_a_new_credential_needs_its_secrets_and_unusable_keys_fail_apply(home):
    result = apply(home, "", FULL_GCP, {}, check=False)
    assert result.exit_code != 0 and "targets[crm].credentials[user].secret: required for a new credential" in result.output
    (home / "sa.json").write_text(json.dumps({"type": "service_account", "client_email": "a@b", "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}))
    result = apply(home, FULL_USER, FULL_GCP, {"CS": "c", "RT": "r"}, check=False)
    assert result.exit_code != 0 and "targets[crm].credentials[gcp]: the service account's private_key is not an unencrypted PEM" in result.output
    assert "AAAA" not in result.output
    (home / "sa.json").write_text(service_account(pooled_key("RSA"), token_uri="https://attacker.example/token"))
    result = apply(home, FULL_USER, FULL_GCP, {"CS": "c", "RT": "r"}, check=False)
    assert result.exit_code != 0 and "token_uri 'https://attacker.example/token' is not token_url" in result.output


def test_explicit_key_with_private_key_jwt_client(home):
    (home / "robot.pem").write_text(pem(pooled_key("EC")))
    (home / "client.pem").write_text(pem(pooled_key("Ed25519")))
    gcp = "issuer: robot@example\n        private_key: {file: robot.pem}\n        client_id: rr\n        client_auth: private_key_jwt\n        client_key: {file: client.pem}"
    apply(home, FULL_USER, gcp, {"CS": "c", "RT": "r"})
    bundle = json.loads(stored_secrets(home)[("crm", "gcp")])
    assert set(bundle) == {"private_key", "client_key"}
