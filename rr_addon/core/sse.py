"""Reading `text/event-stream` bodies as they pass (the parsing rules of the
WHATWG HTML "server-sent events" section). Pure: no I/O, no mitmproxy.

`LineSplitter` cuts the body into lines; `EventParser` (here) and
`rr_addon.core.event_redaction.EventRedactor` both read the stream through it.

`EventParser.feed` takes the body in chunks cut anywhere and returns the
`data` of every event completed so far: the event's `data:` lines joined
with "\\n". Lines end in CRLF, LF or CR; a line starting with ':' is a comment;
fields other than `data` (event, id, retry) are not needed and skipped; an
event is dispatched at a blank line, so an event the stream ends in the
middle of is never dispatched (as the spec says).

Memory is bounded: one event (its pending line and data) may hold `limit`
bytes; beyond that the parser stops (`over`), keeps nothing and returns no
more events, so a stream with no line breaks cannot fill memory.
"""

from __future__ import annotations

import re
from typing import Iterator

_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


class LineSplitter:
    """The lines of a stream that arrives in chunks cut anywhere.

    A line ends in CRLF, LF or CR (a CRLF cut between two chunks is one line
    end); a byte order mark opening the first line is dropped. `pending` holds
    the line not yet ended: its size counts against a caller's memory limit."""

    __slots__ = ("pending", "_cr", "_started")

    def __init__(self) -> None:
        self.pending = bytearray()  # the line not yet ended
        self._cr = False  # the last chunk ended in CR: a LF starting the next one ends no new line
        self._started = False  # the first line is read (a leading BOM is dropped)

    def lines(self, chunk: bytes) -> Iterator[bytes]:
        """Each line this chunk ends, in order; the rest of it is kept in `pending`.

        Lazy, so a caller that stops early (over its limit) copies no more
        lines; the chunk's tail is only kept once every line is taken."""
        if self._cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._cr = chunk[-1:] == b"\r"
        start = 0
        for m in _LINE_END.finditer(chunk):
            if self.pending:
                self.pending += chunk[start : m.start()]
                line = bytes(self.pending)
                self.pending.clear()
            else:
                line = chunk[start : m.start()]
            start = m.end()
            if not self._started:
                self._started = True
                if line.startswith(_BOM):
                    line = line[len(_BOM) :]
            yield line
        self.pending += chunk[start:]

    def take_pending(self) -> bytes:
        """The line the stream ended without ending (as sent), and forget it."""
        line, self.pending = bytes(self.pending), bytearray()
        return line


class EventParser:
    __slots__ = ("limit", "over", "_lines", "_data", "_size")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.over = False
        self._lines = LineSplitter()
        self._data: list[bytes] = []  # the data lines of the event in progress
        self._size = 0  # bytes held in _data

    def feed(self, chunk: bytes) -> list[bytes]:
        """The data of each event this chunk completes, in order."""
        if self.over or not chunk:
            return []
        out: list[bytes] = []
        for line in self._lines.lines(chunk):
            self._take(line, out)
            if self.over:
                return out
        if len(self._lines.pending) + self._size > self.limit:
            self._overflow()
        return out

    def _take(self, line: bytes, out: list[bytes]) -> None:
        if not line:  # a blank line dispatches the event (if it has data)
            if self._data:
                out.append(b"\n".join(self._data))
                self._data, self._size = [], 0
            return
        if line[:1] == b":":  # a comment (keep-alives)
            return
        name, colon, value = line.partition(b":")
        if name != b"data":
            return
        if colon and value[:1] == b" ":
            value = value[1:]
        self._data.append(value)
        self._size += len(value) + 1
        if self._size > self.limit:
            self._overflow()

    def _overflow(self) -> None:
        self.over = True
        self._lines.take_pending()
        self._data, self._size = [], 0


def events(body: bytes, limit: int) -> tuple[list[bytes], bool]:
    """Every event's data of a whole body, and whether one event was over `limit`."""
    parser = EventParser(limit)
    return parser.feed(body), parser.over
