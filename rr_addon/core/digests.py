"""Keyed digests of caller secrets.

Caller secrets are stored only as HMAC-SHA256 digests under a random key that
lives (encrypted) in the database. At request time the presented secret is
digested the same way and looked up in a dict; since the digest is keyed, the
lookup's timing says nothing about stored secrets, and the match is then
confirmed with `hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac


def token_digest(key: bytes, secret: str) -> bytes:
    return hmac.new(key, b"token\x00" + secret.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()


def basic_digest(key: bytes, username: str, secret: str) -> bytes:
    msg = b"basic\x00" + username.encode("utf-8", "surrogateescape") + b"\x00" + secret.encode("utf-8", "surrogateescape")
    return hmac.new(key, msg, hashlib.sha256).digest()


def same(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)
