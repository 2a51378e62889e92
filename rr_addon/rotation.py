"""Target secrets the data plane reads itself: `{file: PATH, watch: true}` and
`{command: [..], timeout: S, refresh: S}` (rr_addon.secret_command).

`rr apply` stores the value it read (so a data plane that cannot read the file
still starts) and the source `watched-file:/absolute/path`. The data plane reads
the file at start and then polls it every second; a changed value recompiles
the snapshot (same configuration version) so new requests carry it. The old
value stays among the scrub pairs for GRACE seconds, so an upstream echoing it
is still masked. A file that cannot be read keeps the last good value, logs an
error and counts in `rr_secret_source_errors_total`.

A command is stored as `exec:<JSON {command, timeout, refresh}>`; the data
plane runs it at start and then every `refresh` seconds (after a failure,
again within RETRY seconds), with the same last-good-value, log and metrics
behaviour as a file.

A value that stops being read here (the configuration moved the watch to
another path or command, or stopped watching) stays scrubbed for GRACE
seconds too: it may still be in flight, or echoed by an upstream.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import stat
import time
from dataclasses import dataclass, field
from typing import Mapping

from rr_addon import metrics, secret_command

logger = logging.getLogger("rr_addon")

WATCHED = "watched-file:"
EXEC = "exec:"
DATA_PLANE_SOURCES = (WATCHED, EXEC)  # sources every data plane reads itself
GRACE = 300.0  # seconds an old value is still scrubbed from responses
POLL = 1.0
RETRY = 10.0  # seconds before a failed command runs again (at most its refresh)


def read_by_data_plane(source: str | None) -> bool:
    return bool(source) and source.startswith(DATA_PLANE_SOURCES)  # type: ignore[union-attr]


def exec_source(command: list[str], timeout: float, refresh: float) -> str:
    return EXEC + json.dumps({"command": command, "timeout": timeout, "refresh": refresh}, separators=(",", ":"))


# A command source is stored sealed (`exec:{…}#<HMAC>`, under a key derived from the
# database's digest key, itself encrypted under the master key): a data plane runs only
# what `rr apply` wrote, so write access to the database alone cannot make every data
# plane run a program.
_SEAL = b"rr exec secret source v1"
UNSEALED = "exec (not sealed by rr apply: not run)"


def seal(source: str | None, hmac_key: bytes) -> str | None:
    if not source or not source.startswith(EXEC):
        return source
    return source + "#" + hmac.new(hmac.new(hmac_key, _SEAL, hashlib.sha256).digest(), source.encode(), hashlib.sha256).hexdigest()


def unseal(stored: str | None, hmac_key: bytes) -> str | None:
    """The source as `rr apply` wrote it; UNSEALED for a command source whose seal does not verify."""
    if not stored or not stored.startswith(EXEC):
        return stored
    source, _, _ = stored.rpartition("#")
    expected = seal(source, hmac_key)
    if not source or expected is None or not hmac.compare_digest(expected, stored):
        logger.error("rr: a stored secret command is not sealed by rr apply; it is not run (run rr apply)")
        return UNSEALED
    return source


def display(stored: str | None) -> str | None:
    """A stored source for `rr secret status` (which has no master key: it shows, never runs)."""
    if stored and stored.startswith(EXEC):
        source, _, _ = stored.rpartition("#")
        try:
            return Command.parse(source).display
        except (ValueError, KeyError, TypeError):
            return UNSEALED
    return stored


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    timeout: float
    refresh: float

    @classmethod
    def parse(cls, source: str) -> Command:
        spec = json.loads(source[len(EXEC) :])
        return cls(tuple(spec["command"]), float(spec["timeout"]), float(spec["refresh"]))

    @property
    def display(self) -> str:
        return "exec: " + " ".join(self.argv)


@dataclass
class Watched:
    target: str
    credential: str
    path: str  # the file, or how the command reads ("exec: argv…")
    source: str = ""  # as stored: what identifies this source across reloads
    command: Command | None = None
    next_run: float = 0.0  # a command: when it runs next (epoch seconds)
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
        self.retired: dict[tuple[str, str], list[tuple[str, float]]] = {}  # values no source here reads any more

    def update(self, sources: Mapping[tuple[str, str, str], str | None], stored_values: Mapping[tuple[str, str], str], now: float | None = None) -> None:
        """Follow the watched sources of a (re)loaded configuration; state of
        unchanged ones is kept so a reload does not forget a rotation. A source
        that changed or went keeps its values scrubbed for GRACE seconds."""
        now = time.time() if now is None else now
        current: dict[tuple[str, str], Watched] = {}
        for (section, target, cred), source in sources.items():
            if section != "targets" or not read_by_data_plane(source):
                continue
            assert source is not None
            old = self.watched.get((target, cred))
            if old is not None and old.source == source:
                current[(target, cred)] = old
            elif source.startswith(EXEC):
                command = Command.parse(source)
                current[(target, cred)] = Watched(target, cred, command.display, source, command, value=stored_values.get((target, cred)))
            else:
                current[(target, cred)] = Watched(target, cred, source[len(WATCHED) :], source, value=stored_values.get((target, cred)))
        for key, old in self.watched.items():
            if current.get(key) is not old:  # moved to another path or command, or no longer watched
                kept = [(v, until) for v, until in old.previous if until > now]
                if old.value is not None:
                    kept.append((old.value, now + GRACE))
                self.retired[key] = self.retired.get(key, []) + kept
        self.watched = current

    def poll(self, now: float | None = None) -> bool:
        """Read every watched source that is due; True if a value the snapshot uses changed."""
        now = time.time() if now is None else now
        changed = False
        for key in list(self.retired):
            kept = [(v, until) for v, until in self.retired[key] if until > now]
            changed |= len(kept) != len(self.retired[key])
            if kept:
                self.retired[key] = kept
            else:
                del self.retired[key]
        for w in self.watched.values():
            before = len(w.previous)
            w.previous = [(v, until) for v, until in w.previous if until > now]
            changed |= len(w.previous) != before
            if w.command is not None and now < w.next_run:
                continue
            try:
                value, signature = self._read(w)
            except ValueError as e:
                if w.command is not None:
                    w.next_run = now + min(RETRY, w.command.refresh)
                metrics.secret_source(w.target, w.credential, False)
                if w.readable:
                    logger.error("rr: secret of %s: %s; still using the last good value", w.label, e)
                w.readable, w.error = False, str(e)
                continue
            if w.command is not None:
                w.next_run = now + w.command.refresh
            metrics.secret_source(w.target, w.credential, True)
            if not w.readable:
                logger.info("rr: secret source of %s is readable again", w.label)
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

    @staticmethod
    def _read(w: Watched) -> tuple[str, tuple]:
        if w.command is None:
            return _read(w.path)
        value = secret_command.run(w.command.argv, w.command.timeout)
        return value, (hashlib.sha256(value.encode()).digest(),)

    def values(self) -> dict[tuple[str, str], str]:
        return {k: w.value for k, w in self.watched.items() if w.value is not None}

    def previous(self) -> dict[tuple[str, str], tuple[str, ...]]:
        out: dict[tuple[str, str], tuple[str, ...]] = {k: tuple(v for v, _ in w.previous) for k, w in self.watched.items() if w.previous}
        for k, kept in self.retired.items():
            out[k] = out.get(k, ()) + tuple(v for v, _ in kept)
        return out

    def status(self) -> dict[str, dict]:
        """What a data plane reports (never a value)."""
        return {
            w.label: {"path": w.path, "readable": w.readable, "rotated_at": w.rotated_at, "error": w.error}
            for w in self.watched.values()
        }
