"""Secrets at rest: the master key(s) and Fernet encryption of upstream secrets.

`RR_MASTER_KEY` holds one or more Fernet keys separated by commas; the first
encrypts, all decrypt (MultiFernet), so keys can rotate. Without it, the key
file `<RR_HOME>/rr.key` (mode 0600, made by `rr init`) is used.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class MasterKeyError(Exception):
    """The master key is missing, unreadable or wrong."""


def key_file(home: Path) -> Path:
    return home / "rr.key"


def master_keys(home: Path, env: dict | None = None) -> list[bytes]:
    env = os.environ if env is None else env
    raw = env.get("RR_MASTER_KEY", "").strip()
    if raw:
        keys = [k.strip().encode() for k in raw.split(",") if k.strip()]
        source = "RR_MASTER_KEY"
    else:
        path = key_file(home)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise MasterKeyError(f"no master key: set RR_MASTER_KEY or run `rr init` to create {path}") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise MasterKeyError(f"{path} is readable by other users (mode {stat.S_IMODE(st.st_mode):o}); run: chmod 600 {path}")
        keys = [k.strip().encode() for k in path.read_text().split() if k.strip()]
        source = str(path)
    if not keys:
        raise MasterKeyError(f"{source} holds no key")
    for k in keys:
        try:
            Fernet(k)
        except ValueError:
            raise MasterKeyError(f"{source}: not a Fernet key (32 url-safe base64-encoded bytes; make one with `rr init`)") from None
    return keys


def create_key_file(home: Path) -> Path | None:
    """Create the key file with a new key unless it exists. Returns its path if created."""
    path = key_file(home)
    home.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return None
    with os.fdopen(fd, "w") as f:
        f.write(Fernet.generate_key().decode() + "\n")
    return path


class Keyring:
    def __init__(self, keys: list[bytes]):
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    def encrypt(self, plaintext: bytes) -> bytes:
        return self._fernet.encrypt(plaintext)

    def decrypt(self, token: bytes) -> bytes:
        try:
            return self._fernet.decrypt(token)
        except InvalidToken:
            raise MasterKeyError("a stored secret cannot be decrypted with the configured master key(s)") from None
