"""Where rr keeps its state, from the environment (the CLI and the addon share this).

RR_HOME          directory for the embedded database, key file and CA (default: current directory)
RR_DATABASE_URL  SQLAlchemy URL (default: sqlite:///<RR_HOME>/rr.db)
RR_MASTER_KEY    Fernet key(s), comma-separated (default: <RR_HOME>/rr.key)
RR_REDIS_URL     optional shared counters
"""

from __future__ import annotations

import os
import re
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("RR_HOME") or ".").expanduser().resolve()


def database_url(override: str | None = None) -> str:
    url = override or os.environ.get("RR_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{home() / 'rr.db'}"


def confdir() -> Path:
    return home() / "certs"


_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*:)?//.*@")  # greedy: a raw '@' in a password is hidden too


def without_userinfo(url: str) -> str:
    """Any URL with its `user:password@` replaced by `***@`, for messages.
    Works on URLs that do not parse; may hide more than the user info, never less."""
    return _USERINFO.sub(lambda m: (m.group(1) or "") + "//***@", url, count=1)
