"""The sealed document carries everything a data plane compiles: every recipe
round-trips to the same stored configuration, secrets included, and compiles."""

from __future__ import annotations

from pathlib import Path

import pytest

import rr_addon
from rr_addon.crypto import Keyring, master_keys
from rr_addon.hybrid import payload
from rr_addon.store import config_store
from rr_addon.store.db import make_engine
from rr_addon.testing.home import rr_cli

EXAMPLES = Path(rr_addon.__file__).resolve().parent.parent / "examples"
SECRETS = {
    "OPENAI_API_KEY": "sk-proj-upstreamOPENAIkey0000000000",
    "CHATBOT_RR_KEY": "rr-chatbot-key",
    "GITHUB_TOKEN": "ghp_upstreamGITHUBtoken",
    "CI_RR_KEY": "rr-ci-key",
    "STRIPE_SECRET_KEY": "sk_test_upstreamSTRIPEkey",
    "BILLING_RR_KEY": "rr-billing-key",
    "ALERTS_RR_KEY": "rr-alerts-key",
    "INVENTORY_API_TOKEN": "inventory-service-token",
}


@pytest.mark.parametrize("name", ["openai", "github-ci", "stripe", "slack-webhook", "internal-jwt"])
def test_every_recipe_round_trips(tmp_path, name):
    rr_cli(tmp_path, "init")
    rr_cli(tmp_path, "apply", "-f", str(EXAMPLES / f"{name}.yaml"), env=SECRETS)
    engine = make_engine(f"sqlite:///{tmp_path / 'rr.db'}")
    try:
        keyring = Keyring(master_keys(tmp_path, env={}))
        stored = config_store.read(engine, keyring)
    finally:
        engine.dispose()
    other = payload.session_keyring()
    back = payload.stored_from(payload.document(stored, keyring), other)
    assert back.config == stored.config
    assert back.version == stored.version and back.hmac_key == stored.hmac_key
    assert back.target_secrets(other) == stored.target_secrets(keyring)
    assert back.caller_secrets(other) == stored.caller_secrets(keyring)
    assert back.caller_digests == stored.caller_digests
    assert back.sources == stored.sources and back.revoked_tokens == stored.revoked_tokens
    snap = config_store.snapshot_of(back, other)
    assert snap.version == stored.version and set(snap.proxies) == {p.name for p in stored.config.proxies}


def test_a_document_of_another_format_is_refused():
    with pytest.raises(ValueError, match="format 2; this rr reads format 1"):
        payload.stored_from(b'{"format": 2}', payload.session_keyring())
