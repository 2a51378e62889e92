"""One audit record per request, with constant field names.

Records never hold secrets, bodies or query values. They are built on the
request path (a dict, no I/O) and handed to a background writer thread; the
queue is bounded, and when it is full records are dropped and counted rather
than slowing the proxy (see `AuditWriter.dropped`).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Protocol

logger = logging.getLogger("rr.audit")

FIELDS = (
    "ts",
    "request_id",
    "result",  # allow | deny | would-deny | error
    "status",
    "code",
    "reason",
    "scope",
    "rule",
    "proxy",
    "credential",
    "channel",
    "target",
    "target_credential",
    "method",
    "scheme",
    "host",
    "port",
    "path",  # without the query string
    "client",
    "bytes_in",
    "bytes_out",
    "latency_ms",
    "decision_ms",  # of latency_ms: rr's own decision (auth, target, rules, meters)
    "config_version",
    "subject",  # of a verified token (jwt_verify, oauth2); never the token
    "issuer",
    "verification",  # which verification path accepted or refused the token
    "meters",  # names of the meters that counted this request
    "redactions",  # detector -> count, never the values
    "dataplane",  # the data plane that served the request
)


def new_record(**values) -> dict:
    rec = dict.fromkeys(FIELDS)
    rec["ts"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise KeyError(f"unknown audit fields: {sorted(unknown)}")
    rec.update(values)
    return rec


class Sink(Protocol):
    def write(self, records: list[dict]) -> None: ...

    def close(self) -> None: ...


class JsonLinesSink:
    """Appends one JSON object per line (for SIEM pipelines)."""

    def __init__(self, path: Path):
        self.path = path
        self._f = path.open("a", encoding="utf-8")

    def write(self, records: list[dict]) -> None:
        self._f.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class LogSink:
    """Denials at INFO, everything else at DEBUG, on the `rr.audit` logger."""

    def write(self, records: list[dict]) -> None:
        for r in records:
            level = logging.INFO if r["result"] in ("deny", "would-deny", "error") else logging.DEBUG
            if logger.isEnabledFor(level):
                logger.log(
                    level,
                    "%s %s %s %s://%s%s -> %s %s (%s)",
                    r["result"],
                    r["request_id"],
                    r["method"],
                    r["scheme"],
                    r["host"],
                    r["path"],
                    r["status"],
                    r["code"] or "",
                    r["reason"],
                )

    def close(self) -> None:
        pass


class AuditWriter:
    """Background thread that drains records into sinks in batches."""

    def __init__(self, sinks: list[Sink], maxsize: int = 20_000, on_error: Callable[[Exception], None] | None = None):
        self.sinks = sinks
        self._q: queue.Queue[dict | None] = queue.Queue(maxsize)
        self.dropped = 0
        self.written = 0
        self._on_error = on_error
        self._thread = threading.Thread(target=self._run, name="rr-audit", daemon=True)
        self._thread.start()

    def submit(self, record: dict) -> None:
        try:
            self._q.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while True:
            item = self._q.get()
            batch = [item] if item is not None else []
            stop = item is None
            while not stop and len(batch) < 1000:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                else:
                    batch.append(nxt)
            if batch:
                for sink in self.sinks:
                    try:
                        sink.write(batch)
                    except Exception as e:  # a failing sink must not stop the others
                        if self._on_error:
                            self._on_error(e)
                        else:
                            logger.exception("audit sink %r failed", sink)
                self.written += len(batch)
            if stop:
                return

    def close(self, timeout: float = 10.0) -> None:
        """Flush everything queued, then stop."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._q.put(None, timeout=max(0.01, deadline - time.monotonic()))
                break
            except queue.Full:
                if time.monotonic() > deadline:
                    break
        self._thread.join(max(0.0, deadline - time.monotonic()))
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                logger.exception("closing audit sink failed")
