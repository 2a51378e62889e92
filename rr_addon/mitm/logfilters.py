"""mitmproxy's log, as rr wants it."""

from __future__ import annotations

import logging
from typing import Any, Callable


_ROUTINE = ("Streaming response from", "Streaming request to")


class StreamingIsRoutine(logging.Filter):
    """rr streams every response it need not filter: mitmproxy's per-flow
    "Streaming response from …" INFO line becomes DEBUG (printing it cost ~5 %).

    `unread`, when set (`rr run` sets it), says whether nothing would show a
    DEBUG record now; the line is then dropped here, before mitmproxy's handlers
    format it and post an `add_log` event for it (~3 % of a small request)."""

    unread: Callable[[], bool] | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and isinstance(record.msg, str) and record.msg.startswith(_ROUTINE):
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
    """Drop the demoted lines whenever `unread()` holds (None: keep them all).

    They are dropped before the record is made, too: mitmproxy's server logger
    gets an instance-level `_log` that returns at once for such a line (finding
    the caller's frame and building the record cost more than the filter)."""
    _STREAMING_FILTER.unread = unread
    server_log = logging.getLogger("mitmproxy.proxy.server")
    server_log.__dict__.pop("_log", None)
    if unread is not None:
        original = server_log._log

        def _log(level: int, msg: object, args: Any, *rest: Any, **kwargs: Any) -> None:
            if level == logging.INFO and isinstance(msg, str) and msg.startswith(_ROUTINE) and unread():
                return
            kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1  # the record names the caller, not this frame
            original(level, msg, args, *rest, **kwargs)

        server_log._log = _log  # type: ignore[method-assign]
