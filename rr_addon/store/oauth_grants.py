"""Rotated OAuth refresh tokens in the configuration database, encrypted
under the master key: the `RefreshTokenStore` of data planes
(rr_addon.identity.grants explains the protocol).

Two data planes racing for one refresh token: each asks for a lease with one
conditional UPDATE (free or expired). The loser gets None
and asks again shortly; by then the winner has stored the rotated token and
ended its lease, so the loser reads the new token and spends that one. The
lease outlives the token request it covers (the request's timeout plus a
margin), so a data plane that dies mid-refresh blocks the others for that
long at most. A `save` only lands while its lease and generation still hold:
a rotated token is never overwritten by an older one.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import uuid
from typing import Hashable

from sqlalchemy import or_, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from rr_addon.crypto import Keyring
from rr_addon.store.db import session
from rr_addon.store.tables import ConfigState, OAuthRefreshTokenRow as Row, utcnow

RETIRED_KEPT = 20  # digests of refresh tokens applied before: a stale data plane cannot bring them back


class DatabaseRefreshTokens:
    def __init__(self, engine: Engine, keyring: Keyring, holder: str | None = None) -> None:
        self._engine, self._keyring = engine, keyring
        self.holder = holder or uuid.uuid4().hex  # this process, in lease_holder
        self._digest_key: bytes | None = None

    def __repr__(self) -> str:
        return f"DatabaseRefreshTokens(holder={self.holder!r})"

    async def lease(self, key: Hashable, seed: str, seconds: float) -> tuple[str, int] | None:
        return await asyncio.to_thread(self.lease_now, key, seed, seconds)

    async def save(self, key: Hashable, generation: int, token: str) -> bool:
        return await asyncio.to_thread(self.save_now, key, generation, token)

    async def release(self, key: Hashable) -> None:
        await asyncio.to_thread(self.release_now, key)

    # ------------------------------------------------------------ blocking versions
    def _digest(self, seed: str) -> bytes:
        if self._digest_key is None:
            with session(self._engine) as s:
                state = s.get(ConfigState, 1)
                assert state is not None, "database is not initialised"
                self._digest_key = self._keyring.decrypt(state.hmac_key_enc)
        return hmac.new(self._digest_key, b"rr-refresh-token\0" + seed.encode(), hashlib.sha256).digest()

    def lease_now(self, key: Hashable, seed: str, seconds: float) -> tuple[str, int] | None:
        target, credential = key  # type: ignore[misc]
        digest = self._digest(seed)
        now = time.time()
        with session(self._engine) as s:
            row = s.exec(select(Row).where(Row.target == target, Row.credential == credential)).first()
            if row is None:
                s.add(Row(target=target, credential=credential, seed_digest=digest, token_enc=self._keyring.encrypt(seed.encode()),
                          lease_holder=self.holder, lease_until=now + seconds))
                try:
                    s.commit()
                except IntegrityError:  # another data plane created it first: ask again
                    s.rollback()
                    return None
                return seed, 0
            values: dict = {"lease_holder": self.holder, "lease_until": now + seconds}
            generation = row.generation
            if digest != row.seed_digest and digest.hex() not in row.retired_seeds:
                # `rr apply` gave a new refresh token: it replaces the rotated one
                retired = [*row.retired_seeds, row.seed_digest.hex()][-RETIRED_KEPT:]
                generation += 1
                values.update(seed_digest=digest, retired_seeds=retired, token_enc=self._keyring.encrypt(seed.encode()), generation=generation, updated_at=utcnow())
                token = seed
            else:
                token = self._keyring.decrypt(row.token_enc).decode()
            # Not re-entrant, even for this process: after a reload, the new configuration's
            # source and the old one's may both be refreshing; they must take turns too.
            free = or_(Row.lease_until.is_(None), Row.lease_until < now)
            taken = s.execute(update(Row).where(Row.id == row.id, Row.generation == row.generation, free).values(**values))
            if taken.rowcount != 1:
                s.rollback()
                return None
            s.commit()
            return token, generation

    def save_now(self, key: Hashable, generation: int, token: str) -> bool:
        target, credential = key  # type: ignore[misc]
        now = utcnow()
        with session(self._engine) as s:
            saved = s.execute(
                update(Row)
                .where(Row.target == target, Row.credential == credential, Row.generation == generation, Row.lease_holder == self.holder)
                .values(token_enc=self._keyring.encrypt(token.encode()), generation=generation + 1, lease_holder=None, lease_until=None, rotated_at=now, updated_at=now)
            )
            s.commit()
            return saved.rowcount == 1

    def release_now(self, key: Hashable) -> None:
        target, credential = key  # type: ignore[misc]
        with session(self._engine) as s:
            s.execute(
                update(Row)
                .where(Row.target == target, Row.credential == credential, Row.lease_holder == self.holder)
                .values(lease_holder=None, lease_until=None)
            )
            s.commit()


def forget_others(s, keep: set[tuple[str, str]]) -> None:
    """Within `rr apply`'s transaction: delete the refresh tokens of credentials that
    are gone or no longer `oauth2_refresh_token` (nothing secret is kept for nothing)."""
    for row in s.exec(select(Row)):
        if (row.target, row.credential) not in keep:
            s.delete(row)


def rotations(engine: Engine) -> list[dict]:
    """What is stored, for operators and tests: never the token."""
    with session(engine) as s:
        rows = s.exec(select(Row).order_by(Row.target, Row.credential)).all()
        return [{"target": r.target, "credential": r.credential, "generation": r.generation, "rotated_at": r.rotated_at} for r in rows]
