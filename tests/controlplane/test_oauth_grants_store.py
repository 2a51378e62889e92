"""Rotated refresh tokens in the configuration database (rr_addon.store.oauth_grants),
on SQLite and PostgreSQL: two data planes (two stores, two holders) take turns,
the newest token wins, a newly applied refresh token replaces a rotated one,
a stale one does not come back, and the token is stored encrypted."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from sqlmodel import select

from rr_addon.crypto import Keyring
from rr_addon.store import config_store
from rr_addon.store.db import session
from rr_addon.store.oauth_grants import DatabaseRefreshTokens, rotations
from rr_addon.store.tables import OAuthRefreshTokenRow

KEY = ("api", "crm")


@pytest.fixture
def planes(engine):
    keyring = Keyring([Fernet.generate_key()])
    config_store.initialise(engine, keyring)
    return DatabaseRefreshTokens(engine, keyring, holder="plane-a"), DatabaseRefreshTokens(engine, keyring, holder="plane-b")


def test_two_data_planes_take_turns_and_the_second_spends_the_rotated_token(planes, engine):
    a, b = planes
    assert a.lease_now(KEY, "rt-seed", 30) == ("rt-seed", 0)
    assert b.lease_now(KEY, "rt-seed", 30) is None, "a holds the lease: b waits"
    assert a.save_now(KEY, 0, "rt-second") is True  # a's refresh rotated the token; the lease ends
    assert b.lease_now(KEY, "rt-seed", 30) == ("rt-second", 1), "b spends the newest token, never the seed again"
    assert a.save_now(KEY, 1, "rt-stale") is False, "a no longer holds the lease: nothing overwritten"
    assert b.save_now(KEY, 1, "rt-third") is True
    assert a.lease_now(KEY, "rt-seed", 30) == ("rt-third", 2)
    a.release_now(KEY)
    (row,) = rotations(engine)
    assert (row["generation"], row["rotated_at"] is not None) == (2, True)


def test_an_expired_lease_is_taken_over(planes):
    a, b = planes
    assert a.lease_now(KEY, "rt-seed", -1) == ("rt-seed", 0)  # a died mid-refresh: its lease ran out
    assert b.lease_now(KEY, "rt-seed", 30) == ("rt-seed", 0)
    assert a.save_now(KEY, 0, "rt-late") is False, "the late answer of a does not overwrite what b will store"


def test_a_newly_applied_refresh_token_replaces_the_rotated_one_and_a_stale_one_does_not_return(planes):
    a, b = planes
    a.lease_now(KEY, "rt-seed", 30)
    a.save_now(KEY, 0, "rt-rotated")
    assert b.lease_now(KEY, "rt-new-consent", 30) == ("rt-new-consent", 2)  # rr apply gave a new one
    b.release_now(KEY)
    assert a.lease_now(KEY, "rt-seed", 30) == ("rt-new-consent", 2), "a plane still on the old configuration reads the new token"


def test_stored_encrypted(planes, engine):
    a, _ = planes
    a.lease_now(KEY, "rt-seed-PLAINTEXT", 30)
    a.save_now(KEY, 0, "rt-rotated-PLAINTEXT")
    with session(engine) as s:
        row = s.exec(select(OAuthRefreshTokenRow)).one()
        raw = repr(row.model_dump()).encode()
    assert b"PLAINTEXT" not in raw and b"rt-" not in row.token_enc and b"rt-" not in row.seed_digest


def test_apply_forgets_the_refresh_token_of_a_deleted_credential(planes, engine):
    from rr_addon.policy import schema

    a, _ = planes
    a.lease_now(KEY, "rt-seed", 30)
    a.lease_now(("api", "kept"), "rt-kept", 30)
    keyring = a._keyring
    stored = config_store.read(engine, keyring)
    target = {"name": "api", "hosts": ["api.example"], "credentials": [
        {"name": "kept", "kind": "oauth2_refresh_token", "token_url": "https://idp.example/token", "client_id": "rr", "client_auth": "none"}]}
    desired = config_store.Desired(schema.Config.model_validate({"targets": [target]}), {("api", "kept"): ('{"refresh_token": "rt-kept"}', "literal")}, {})
    config_store.write(engine, stored, desired, keyring, "test")
    assert [(r["target"], r["credential"]) for r in rotations(engine)] == [("api", "kept")]


def test_the_lease_is_not_reentrant_within_one_process(planes):
    """After a reload, the old and the new source of one credential live in one process: they take turns."""
    a, _ = planes
    assert a.lease_now(KEY, "rt-seed", 30) == ("rt-seed", 0)
    assert a.lease_now(KEY, "rt-seed", 30) is None
    a.release_now(KEY)
    assert a.lease_now(KEY, "rt-seed", 30) == ("rt-seed", 0)
