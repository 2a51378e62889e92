"""The data-plane bundle: one JSON file (mode 0600) holding everything a data
plane needs to join its control plane — the control plane's URL and CA, the
data plane's client certificate and key (mutual TLS), the private half of the
key configuration is sealed to, and the control plane's signing key (public).

It is a credential: whoever holds it can fetch that data plane's
configuration, secrets included. `rr control-plane revoke-dataplane NAME`
cuts it off."""

from __future__ import annotations

import json
import os
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from rr_addon.hybrid import pki
from rr_addon.hybrid.sealing import b64, unb64

KIND = "rr-dataplane-bundle"


class BundleError(Exception):
    pass


@dataclass(frozen=True)
class Bundle:
    name: str
    control_plane: str  # https://host:port
    ca: bytes  # PEM: the control plane's CA
    certificate: bytes  # PEM: this data plane's client certificate
    key: bytes  # PEM: its private key
    seal_key: bytes  # raw X25519 private key
    signing_public: bytes  # raw Ed25519 public key of the control plane

    def as_json(self) -> str:
        return json.dumps(
            {
                "kind": KIND,
                "format": 1,
                "name": self.name,
                "control_plane": self.control_plane,
                "ca": self.ca.decode(),
                "certificate": self.certificate.decode(),
                "key": self.key.decode(),
                "seal_key": b64(self.seal_key),
                "signing_public_key": b64(self.signing_public),
            },
            indent=2,
        )

    @property
    def private(self) -> X25519PrivateKey:
        return X25519PrivateKey.from_private_bytes(self.seal_key)

    @property
    def verifier(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.signing_public)

    def ssl_context(self) -> ssl.SSLContext:
        """Trusts only the control plane's CA, presents this data plane's certificate."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=self.ca.decode())
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        pki.load_chain(ctx, self.certificate, self.key)
        return ctx


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise BundleError(f"control plane URL {url!r} must be https://HOST[:PORT]")
    if parts.path not in ("", "/") or parts.query or parts.username:
        raise BundleError(f"control plane URL {url!r} must be just https://HOST[:PORT] (no path, query or user)")
    return f"https://{parts.netloc}"


def write_private(path: Path, text: str) -> None:
    """Write a credential file readable by its owner only (also when it existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


def read(path: Path) -> Bundle:
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise BundleError(f"cannot read the data-plane bundle {path}: {e.strerror or e}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise BundleError(f"{path} is readable by other users (mode {stat.S_IMODE(st.st_mode):o}): it holds the data plane's keys; run: chmod 600 {path}")
    try:
        doc = json.loads(text)
        if doc.get("kind") != KIND:
            raise BundleError(f"{path} is not an rr data-plane bundle (make one with `rr control-plane issue-dataplane NAME`)")
        return Bundle(
            name=doc["name"],
            control_plane=check_url(doc["control_plane"]),
            ca=doc["ca"].encode(),
            certificate=doc["certificate"].encode(),
            key=doc["key"].encode(),
            seal_key=unb64(doc["seal_key"]),
            signing_public=unb64(doc["signing_public_key"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise BundleError(f"{path} is not a valid rr data-plane bundle ({type(e).__name__}: {e})") from None
