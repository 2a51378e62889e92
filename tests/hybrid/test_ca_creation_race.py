"""Two control-plane replicas on one database starting for the first time both
find no CA and both make one: exactly one is stored and both serve it."""

from __future__ import annotations

import threading

import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization

from rr_addon.crypto import Keyring
from rr_addon.hybrid import pki, registry
from rr_addon.store.db import make_engine, migrate


def _race(url: str, monkeypatch) -> None:
    keyring = Keyring([Fernet.generate_key()])
    engine = make_engine(url)
    migrate(engine)
    both_looked = threading.Barrier(2)
    create = pki.CA.create

    def create_after_both_looked(*a, **kw):
        both_looked.wait(timeout=10)  # each replica has seen no row before either writes one
        return create(*a, **kw)

    monkeypatch.setattr(pki.CA, "create", staticmethod(create_after_both_looked))
    results: list = [None, None]

    def replica(i: int) -> None:
        own = make_engine(url)  # a replica of its own: its own connections
        try:
            results[i] = registry.keys(own, keyring)
        except Exception as e:  # noqa: BLE001 - the assertion names it
            results[i] = e
        finally:
            own.dispose()

    threads = [threading.Thread(target=replica, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(isinstance(r, Exception) for r in results), results
    a, b = results
    assert pki.cert_pem(a.ca.cert) == pki.cert_pem(b.ca.cert)
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    assert a.signer.public_key().public_bytes(*raw) == b.signer.public_key().public_bytes(*raw)
    assert pki.cert_pem(registry.keys(engine, keyring).ca.cert) == pki.cert_pem(a.ca.cert)  # and it is the stored one
    engine.dispose()


def test_two_replicas_creating_the_ca_at_once_on_sqlite(tmp_path, monkeypatch):
    _race(f"sqlite:///{tmp_path / 'rr.db'}", monkeypatch)


@pytest.mark.services
def test_two_replicas_creating_the_ca_at_once_on_postgres(pg_url, monkeypatch):
    _race(pg_url, monkeypatch)
