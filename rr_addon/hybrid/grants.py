"""Rotated OAuth refresh tokens of a hybrid data plane, kept on its own disk
(`$RR_HOME/dataplane/spool.db`, table `rr_oauth_refresh_token`) and encrypted
under a key derived from its bundle's private sealing key (HKDF-SHA256): the
key material it already holds and never sends anywhere. A restarted data plane
spends the newest refresh token, not the configured one the identity provider
may have retired.

Why local, not relayed to the control plane: a data plane must keep working
while the control plane is unreachable, and a refresh token rotated then would
otherwise be lost at its next restart; and data planes never send secrets
upstream to the control plane. The lease and generation rules are those of the
database-backed store (rr_addon.store.oauth_grants), so a reload that briefly
runs two sources of one credential still spends a token once.

A re-issued bundle (`issue-dataplane NAME --force`) has a new key: what the
old one encrypted cannot be read, so it is dropped and the configured token is
used again (as a data plane that never rotated one would)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Hashable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import delete
from sqlalchemy.engine import Engine

from rr_addon.crypto import Keyring, MasterKeyError
from rr_addon.store.oauth_grants import DatabaseRefreshTokens
from rr_addon.store.tables import OAuthRefreshTokenRow

TABLE = OAuthRefreshTokenRow.__table__  # type: ignore[attr-defined]


def _derive(seal_key: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"rr data plane " + purpose).derive(seal_key)


class SpoolRefreshTokens(DatabaseRefreshTokens):
    def __init__(self, spool: Engine, seal_key: bytes) -> None:
        super().__init__(spool, Keyring([base64.urlsafe_b64encode(_derive(seal_key, b"refresh tokens"))]))
        self._digest_key = _derive(seal_key, b"refresh token digests")

    def __repr__(self) -> str:
        return f"SpoolRefreshTokens(holder={self.holder!r})"

    def _digest(self, seed: str) -> bytes:
        assert self._digest_key is not None
        return hmac.new(self._digest_key, b"rr-refresh-token\0" + seed.encode(), hashlib.sha256).digest()

    def lease_now(self, key: Hashable, seed: str, seconds: float) -> tuple[str, int] | None:
        try:
            return super().lease_now(key, seed, seconds)
        except MasterKeyError:  # written under another bundle's key: unreadable, so unusable
            target, credential = key  # type: ignore[misc]
            with self._engine.begin() as conn:
                conn.execute(delete(TABLE).where(TABLE.c.target == target, TABLE.c.credential == credential))
            return super().lease_now(key, seed, seconds)
