"""mitmproxy's log, as rr wants it."""

from __future__ import annotations

import logging


class StreamingIsRoutine(logging.Filter):
    """rr streams every response it need not filter: mitmproxy's per-flow
    "Streaming response from …" INFO line becomes DEBUG (printing it cost ~5 %)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and isinstance(record.msg, str) and record.msg.startswith(("Streaming response from", "Streaming request to")):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


_STREAMING_FILTER = StreamingIsRoutine()


def quiet_streaming_lines() -> None:
    server_log = logging.getLogger("mitmproxy.proxy.server")
    if not any(isinstance(f, StreamingIsRoutine) for f in server_log.filters):
        server_log.addFilter(_STREAMING_FILTER)
