"""A stored configuration as the document the control plane seals for a data
plane, and back. The document holds what `config_store.snapshot_of` needs —
the configuration (secrets omitted), the digest key, upstream secrets, caller
digests and verifying secrets, watched-secret sources, revoked tokens — so a
data plane compiles exactly the snapshot a database-backed one would.

On the data plane the secrets are kept Fernet-encrypted under a key made for
this process and never written anywhere (`session_keyring`), so every code
path that reads a `Stored` (the secret watcher, rotation) works unchanged."""

from __future__ import annotations

import json

from cryptography.fernet import Fernet

from rr_addon.policy import schema
from rr_addon.crypto import Keyring
from rr_addon.hybrid.sealing import b64, unb64
from rr_addon.store.config_store import Stored

FORMAT = 1


def session_keyring() -> Keyring:
    return Keyring([Fernet.generate_key()])


def _pairs(d: dict[tuple[str, str], object], fn) -> list:
    return [[a, b, fn(v)] for (a, b), v in sorted(d.items())]


def document(stored: Stored, keyring: Keyring) -> bytes:
    """The clear document (sealed before it leaves the control plane)."""
    doc = {
        "format": FORMAT,
        "version": stored.version,
        "config": stored.config.model_dump(mode="json", exclude_none=True, by_alias=True),
        "hmac_key": b64(stored.hmac_key),
        "target_secrets": _pairs(stored.target_secrets(keyring), str),
        "caller_secrets": _pairs(stored.caller_secrets(keyring), str),
        "caller_digests": _pairs(stored.caller_digests, b64),
        "sources": [[s, o, c, v] for (s, o, c), v in sorted(stored.sources.items())],
        "revoked_tokens": sorted(stored.revoked_tokens),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def stored_from(data: bytes, keyring: Keyring) -> Stored:
    """The `Stored` a document describes, its secrets encrypted under `keyring`. ValueError if malformed."""
    try:
        doc = json.loads(data)
        if doc.get("format") != FORMAT:
            raise ValueError(f"configuration format {doc.get('format')!r}; this rr reads format {FORMAT} (upgrade rr)")
        return Stored(
            version=int(doc["version"]),
            config=schema.Config.model_validate(doc["config"]),
            hmac_key=unb64(doc["hmac_key"]),
            target_secrets_enc={(a, b): keyring.encrypt(v.encode("utf-8")) for a, b, v in doc["target_secrets"]},
            caller_secrets_enc={(a, b): keyring.encrypt(v.encode("utf-8")) for a, b, v in doc["caller_secrets"]},
            caller_digests={(a, b): unb64(v) for a, b, v in doc["caller_digests"]},
            sources={(s, o, c): v for s, o, c, v in doc["sources"]},
            revoked_tokens=frozenset(doc["revoked_tokens"]),
        )
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"malformed configuration document ({type(e).__name__}: {e})") from None
