"""Target secrets the data plane reads itself: `{file: PATH, watch: true}`.

`rr apply` stores the value it read (so a data plane that cannot read the file
still starts) and the source `watched-file:/absolute/path`. The data plane reads
the file at start and then polls it every second; a changed value recompiles
the snapshot (same configuration version) so new requests carry it. The old
value stays among the scrub pairs for GRACE seconds, so an upstream echoing it
is still masked. A file that cannot be read keeps the last good value, logs an
error and counts in `rr_secret_source_errors_total`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
from dataclasses import dataclass, field
from typing import Mapping

from rr_addon import metrics

logger = logging.getLogger("rr_addon")

WATCHED = "watched-file:"
GRACE = 300.0  # seconds an old value is still scrubbed from responses
POLL = 1.0


@dataclass
class Watched:
    target: str
    credential: str
    path: str
    value: str | None = None  # last good value
    signature: tuple | None = None  # (inode, mtime_ns, size, content digest)
    rotated_at: float | None = None  # epoch seconds of the last change seen by this data plane
    readable: bool = True
    error: str | None = None
    previous: list[tuple[str, float]] = field(default_factory=list)  # (old value, scrubbed until)

    @property
    def label(self) -> str:
        return f"{self.target}/{self.credential}"


_MAX_SIZE = 1 << 20


def _read(path: str) -> tuple[str, tuple]:
    """The value and a signature of the file. Raises ValueError naming the problem."""
    try:
        # open follows the `..data` symlink as it is now; O_NONBLOCK: a FIFO put there must not hang rr
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ValueError(f"secret file {path} is not a regular file")
            if st.st_size > _MAX_SIZE:
                raise ValueError(f"secret file {path} is larger than {_MAX_SIZE} bytes")
            raw = f.read(_MAX_SIZE + 1)
    except OSError as e:
        raise ValueError(f"cannot read secret file {path}: {e.strerror or e}") from None
    if len(raw) > _MAX_SIZE:
        raise ValueError(f"secret file {path} is larger than {_MAX_SIZE} bytes")
    try:
        value = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ValueError(f"secret file {path} is not UTF-8") from None
    if not value:
        raise ValueError(f"secret file {path} is empty")
    return value, (st.st_ino, st.st_mtime_ns, st.st_size, hashlib.sha256(raw).digest())


class SecretWatcher:
    def __init__(self) -> None:
        self.watched: dict[tuple[str, str], Watched] = {}

    def update(self, sources: Mapping[tuple[str, str, str], str | None], stored_values: Mapping[tuple[str, str], str]) -> None:
        """Follow the watched sources of a (re)loaded configuration; state of
        unchanged ones is kept so a reload does not forget a rotation."""
        now: dict[tuple[str, str], Watched] = {}
        for (section, target, cred), source in sources.items():
            if section != "targets" or not source or not source.startswith(WATCHED):
                continue
            path = source[len(WATCHED) :]
            old = self.watched.get((target, cred))
            if old is not None and old.path == path:
                now[(target, cred)] = old
            else:
                now[(target, cred)] = Watched(target, cred, path, value=stored_values.get((target, cred)))
        self.watched = now

    def poll(self, now: float | None = None) -> bool:
        """Read every watched file; True if a value the snapshot uses changed."""
        now = time.time() if now is None else now
        changed = False
        for w in self.watched.values():
            before = len(w.previous)
            w.previous = [(v, until) for v, until in w.previous if until > now]
            changed |= len(w.previous) != before
            try:
                value, signature = _read(w.path)
            except ValueError as e:
                metrics.secret_source(w.target, w.credential, False)
                if w.readable:
                    logger.error("rr: secret of %s: %s; still using the last good value", w.label, e)
                w.readable, w.error = False, str(e)
                continue
            metrics.secret_source(w.target, w.credential, True)
            if not w.readable:
                logger.info("rr: secret file of %s is readable again", w.label)
            w.readable, w.error = True, None
            if signature == w.signature:
                continue
            w.signature = signature
            if value != w.value:
                if w.value is not None:
                    w.previous.append((w.value, now + GRACE))
                    w.rotated_at = now
                    logger.info("rr: secret of %s rotated (from %s)", w.label, w.path)
                w.value = value
                changed = True
        return changed

    def values(self) -> dict[tuple[str, str], str]:
        return {k: w.value for k, w in self.watched.items() if w.value is not None}

    def previous(self) -> dict[tuple[str, str], tuple[str, ...]]:
        return {k: tuple(v for v, _ in w.previous) for k, w in self.watched.items() if w.previous}

    def status(self) -> dict[str, dict]:
        """What a data plane reports (never a value)."""
        return {
            w.label: {"path": w.path, "readable": w.readable, "rotated_at": w.rotated_at, "error": w.error}
            for w in self.watched.values()
        }
