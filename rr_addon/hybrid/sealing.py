"""Configuration sealed for one data plane.

The control plane encrypts each configuration document to the data plane's
X25519 public key (an ephemeral key agreement, HKDF-SHA256, AES-256-GCM; the
data plane's name and the version are authenticated data) and signs the
envelope with its Ed25519 key. Only the data plane that holds the private half
(in its bundle) can read it, and it accepts only envelopes the control plane
signed — on the wire and when it reads its on-disk cache back.
"""

from __future__ import annotations

import base64
import json
import os

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ALGORITHM = "x25519-hkdf-sha256-aes256gcm+ed25519"
_INFO = b"rr hybrid configuration v1"


class SealError(Exception):
    """An envelope that is not for this data plane, was altered, or was not signed by its control plane."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def raw_public(key: X25519PublicKey | Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def raw_private(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def _key(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=ephemeral + recipient, info=_INFO).derive(shared)


def _aad(name: str, version: int) -> bytes:
    return json.dumps({"dataplane": name, "version": version}, sort_keys=True).encode()


def _signed_part(env: dict) -> bytes:
    return json.dumps({k: env[k] for k in ("alg", "dataplane", "version", "ephemeral", "nonce", "ciphertext")}, sort_keys=True).encode()


def seal(document: bytes, *, name: str, version: int, recipient: X25519PublicKey, signer: Ed25519PrivateKey) -> dict:
    ephemeral = X25519PrivateKey.generate()
    eph_pub, rec_pub = raw_public(ephemeral.public_key()), raw_public(recipient)
    key = _key(ephemeral.exchange(recipient), eph_pub, rec_pub)
    nonce = os.urandom(12)
    env = {
        "alg": ALGORITHM,
        "dataplane": name,
        "version": version,
        "ephemeral": b64(eph_pub),
        "nonce": b64(nonce),
        "ciphertext": b64(AESGCM(key).encrypt(nonce, document, _aad(name, version))),
    }
    env["signature"] = b64(signer.sign(_signed_part(env)))
    return env


def open_sealed(env: dict, *, name: str, private: X25519PrivateKey, verifier: Ed25519PublicKey) -> tuple[int, bytes]:
    """(version, document) of an envelope for `name`; SealError otherwise."""
    try:
        if env.get("alg") != ALGORITHM:
            raise SealError(f"unknown envelope algorithm {env.get('alg')!r}")
        verifier.verify(unb64(env["signature"]), _signed_part(env))
        if env["dataplane"] != name:
            raise SealError(f"the configuration is sealed for data plane {env['dataplane']!r}, not {name!r}")
        version = env["version"]
        if not isinstance(version, int):
            raise SealError("the envelope's version is not an integer")
        eph = unb64(env["ephemeral"])
        key = _key(private.exchange(X25519PublicKey.from_public_bytes(eph)), eph, raw_public(private.public_key()))
        return version, AESGCM(key).decrypt(unb64(env["nonce"]), unb64(env["ciphertext"]), _aad(name, version))
    except InvalidSignature:
        raise SealError("the configuration's signature does not verify with the control plane's key") from None
    except InvalidTag:
        raise SealError("the configuration cannot be decrypted with this data plane's key") from None
    except (KeyError, TypeError, ValueError) as e:
        raise SealError(f"not a sealed configuration ({type(e).__name__}: {e})") from None
