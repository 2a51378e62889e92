"""Build snapshots straight from configuration dicts with literal secrets (tests, explain, benchmarks)."""

from __future__ import annotations

from rr_addon.policy.schema import BasicCaller, Config
from rr_addon.core.digests import basic_digest, token_digest
from rr_addon.core.snapshot import Snapshot, compile_snapshot

TEST_HMAC_KEY = b"k" * 32


def snapshot_from(data: dict, *, version: int = 1, hmac_key: bytes = TEST_HMAC_KEY) -> Snapshot:
    config = Config.model_validate(data)
    target_secrets = {
        (t.name, c.name): c.secret for t in config.targets for c in t.credentials if isinstance(c.secret, str)
    }
    digests = {}
    for p in config.proxies:
        for c in p.credentials:
            assert isinstance(c.secret, str), "snapshot_from takes literal secrets only"
            if isinstance(c, BasicCaller):
                digests[(p.name, c.name)] = basic_digest(hmac_key, c.username, c.secret)
            else:
                digests[(p.name, c.name)] = token_digest(hmac_key, c.secret)
    return compile_snapshot(config, version=version, hmac_key=hmac_key, target_secrets=target_secrets, caller_digests=digests)
