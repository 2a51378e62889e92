"""The audit trail's background writer and its file and log sinks.

Records (`audit.records`) are built on the request path and handed to
`AuditWriter`, whose thread writes them in batches; the queue is bounded, and
when it is full records are dropped and counted rather than slowing the proxy
(see `AuditWriter.dropped`). The database sink is `store.audit_store`.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
from pathlib import Path
from typing import Callable, Protocol

from rr_addon.core.terminal import printable

logger = logging.getLogger("rr.audit")


class Sink(Protocol):
    def write(self, records: list[dict]) -> None: ...

    def close(self) -> None: ...


def open_private(path: Path):
    """Open `path` for appending text; a new file is created 0600, like the
    database that holds the same records (an existing file keeps its mode: an
    operator may have opened it to a log shipper's group on purpose)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    return os.fdopen(fd, "a", encoding="utf-8")


class JsonLinesSink:
    """Appends one JSON object per line (for SIEM pipelines)."""

    def __init__(self, path: Path):
        self.path = path
        self._f = open_private(path)

    def write(self, records: list[dict]) -> None:
        self._f.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class LogSink:
    """Denials, would-denials and errors at INFO on the `rr.audit` logger, one
    line each with constant field names: who called (`caller=proxy/credential`,
    `-` when unauthenticated), what (method, scheme://host:port/path), the answer,
    and where the decision was taken (`scope=`, `rule=`). Allowed requests are
    not logged: the audit trail records them (a log call per request would cost
    more than rr's whole decision)."""

    def write(self, records: list[dict]) -> None:
        if not logger.isEnabledFor(logging.INFO):
            return
        for r in records:
            if r["result"] in ("deny", "would-deny", "error"):
                logger.info(log_line(r))

    def close(self) -> None:
        pass


def log_line(r: dict) -> str:
    # method, host, path and reason carry caller bytes: escaped here too, whatever handlers the logger has
    caller = f"{r['proxy']}/{r['credential']}" if r["proxy"] else "-"
    return (
        f"{r['result']} {r['request_id']} caller={printable(caller)} {printable(r['method'])} "
        f"{r['scheme']}://{printable(r['host'])}:{r['port']}{printable(r['path'])}"
        f" -> {r['status']} {r['code'] or '-'} scope={r['scope'] or '-'} rule={printable(r['rule'] or '-')}: {printable(r['reason'])}"
    )


class AuditWriter:
    """A background thread that drains records into the sinks in batches.

    `submit` only appends to a deque (no lock, no wake-up): the thread looks
    every `interval` seconds, so a busy proxy pays ~0.1 µs per record instead
    of a thread switch. At most `maxsize` records wait; beyond that they are
    dropped and counted (`dropped`), never blocking the proxy."""

    def __init__(
        self, sinks: list[Sink], maxsize: int = 20_000, on_error: Callable[[Exception], None] | None = None, interval: float = 0.2
    ):
        self.sinks = sinks
        self.maxsize = maxsize
        self.interval = interval
        self._q: collections.deque[dict] = collections.deque()
        self.dropped = 0
        self.written = 0
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rr-audit", daemon=True)
        self._thread.start()

    def submit(self, record: dict) -> None:
        if len(self._q) >= self.maxsize:
            self.dropped += 1
        else:
            self._q.append(record)

    def qsize(self) -> int:
        return len(self._q)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._drain()
        self._drain()

    def _drain(self) -> None:
        q = self._q
        while q:
            batch = []
            while q and len(batch) < 1000:
                batch.append(q.popleft())
            for sink in self.sinks:
                try:
                    sink.write(batch)
                except Exception as e:  # a failing sink must not stop the others
                    if self._on_error:
                        self._on_error(e)
                    else:
                        logger.exception("audit sink %r failed", sink)
            self.written += len(batch)

    def close(self, timeout: float = 10.0) -> None:
        """Flush everything queued, then stop."""
        self._stop.set()
        self._thread.join(timeout)
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                logger.exception("closing audit sink failed")
