"""Text a caller controls, made safe for a terminal.

Method, path, headers and names reach log lines and `rr audit` tables. A
control character there is a command to the terminal (ESC starts colour,
cursor, clear-screen and OSC title/hyperlink sequences; C1 0x9b is a one-byte
CSI), and Unicode bidirectional overrides reorder what the reader sees. Each is
shown visibly instead, as a Python-style escape (`\\x1b`, `\\x9b`, `\\u202e`);
every other character is left alone."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

# C0 (tab and newline too: one record, one line), DEL, C1, and the bidi
# embeddings, overrides, isolates and marks.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c <= 0xFF else f"\\u{c:04x}"


def printable(value: object) -> str:
    """`value` as text with every terminal control character escaped visibly."""
    text = value if isinstance(value, str) else str(value)
    return _UNSAFE.sub(_escape, text)


def _clean(arg: object) -> object:
    if isinstance(arg, (int, float)):  # bool too: kept for %d / %f
        return arg
    return printable(arg)


class EscapeControls(logging.Filter):
    """Escapes what a log record interpolates (its args: requests, errors, names)
    before any handler prints it. A message without args (an f-string) is
    escaped too, except its line breaks: those are the code's, not a caller's."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            if isinstance(record.args, Mapping):
                record.args = {k: _clean(v) for k, v in record.args.items()}
            else:
                record.args = tuple(_clean(a) for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = "\n".join(printable(line) for line in record.msg.split("\n"))
        return True


_FILTER = EscapeControls()


def escape_log_output() -> None:
    """Put the filter on every handler of the root logger (mitmproxy's terminal
    and web event log handlers): every logger's records pass through them."""
    for handler in logging.getLogger().handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
