"""mitmproxy's log, as rr wants it."""

from __future__ import annotations

import logging
from typing import Callable


class StreamingIsRoutine(logging.Filter):
    """rr streams every response it need not filter: mitmproxy's per-flow
    "Streaming response from …" INFO line becomes DEBUG (printing it cost ~5 %).

    `unread`, when set (`rr run` sets it), says whether nothing would show a
    DEBUG record now; the line is then dropped here, before mitmproxy's handlers
    format it and post an `add_log` event for it (~3 % of a small request)."""

    unread: Callable[[], bool] | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and isinstance(record.msg, str) and record.msg.startswith(("Streaming response from", "Streaming request to")):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            unread = self.unread
            return unread is None or not unread()
        return True


_STREAMING_FILTER = StreamingIsRoutine()


def quiet_streaming_lines() -> None:
    server_log = logging.getLogger("mitmproxy.proxy.server")
    if not any(isinstance(f, StreamingIsRoutine) for f in server_log.filters):
        server_log.addFilter(_STREAMING_FILTER)


def drop_unread_streaming_lines(unread: Callable[[], bool] | None) -> None:
    """Drop the demoted lines whenever `unread()` holds (None: keep them all)."""
    _STREAMING_FILTER.unread = unread
