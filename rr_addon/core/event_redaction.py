"""Redaction, filters and echo scrubbing of a `text/event-stream` body, event by event,
as it streams (docs/policy.md: redact; README: Filters and redaction). Pure: no I/O.

`EventRedactor` is a stage of `rr_addon.core.recode.Recoder` (which decodes a
compressed stream first and encodes the result again; identity streams pass
through it unchanged). It holds the lines of one event until the blank line
that ends it — so a value cut across TCP chunks is whole when it is scanned,
and a match never spans two events — then passes the event on rewritten:

- the `data:` lines joined with "\\n" are the payload. A payload that parses as
  JSON is filtered (2xx responses, when filters apply), redacted and scrubbed as
  a JSON document and written back as one `data:` line of compact JSON; any
  other payload is redacted and scrubbed as text and written back line by line.
  An event nothing changed leaves as the upstream wrote it — a JSON one only if
  no detector finds anything in its raw bytes and (with a secret to scrub) it
  has no escape, since a duplicate key's value the parse dropped would pass.
- other lines (`event:`, `id:`, `retry:`, comments) are redacted as text.
- echoed injected secrets are scrubbed from the whole event last, whatever it is.

Fail closed: an event over `limit` bytes, or a non-JSON payload when filters
apply (except the `[DONE]` sentinel, which carries nothing), cannot be vouched
for. The stream then ends with an `event: error` carrying rr's JSON error, and
`failed` says why: the glue stops reading the upstream and cuts the caller's
stream so it never looks complete (or answers 502 if nothing left yet).
At the end of the body, lines of an event the upstream never finished are
passed on redacted, without the blank line that would dispatch it (as the
upstream sent them, a client never dispatches them).
"""

from __future__ import annotations

from typing import Any, Sequence

from rr_addon.policy.bodies import BodyError, dump_json, media_type, parse_json
from rr_addon.policy.filters import Filter, apply_filters
from rr_addon.policy.redact import Redactor, scrub_document
from rr_addon.policy.scrub import scrub_bytes
from rr_addon.core.responses import unchanged_by
from rr_addon.core.sse import LineSplitter

DONE = b"[DONE]"

EVENT_TOO_LARGE = "an event of the stream is larger than rr_buffer_limit, and redaction or filters apply"
EVENT_NOT_JSON = "an event of the stream is not JSON, and filters apply"


def error_event(code: str, message: str, request_id: str) -> bytes:
    """The last event of a stream rr ends: rr's error in the shape of its JSON answers."""
    doc = {"error": {"code": code, "message": message, "request_id": request_id}, "message": f"rr {code}: {message}"}
    return b"event: error\ndata: " + dump_json(doc) + b"\n\n"


class EventRedactor:
    """A stream stage: chunks in, rewritten complete events out (`bytes | list[bytes]`).

    `counts` totals the redactions by detector; `failed` is set once the stream
    cannot go on (then nothing more is passed)."""

    __slots__ = ("redactor", "filters", "pairs", "limit", "request_id", "counts", "failed", "_lines", "_splitter", "_size")

    def __init__(
        self,
        redactor: Redactor | None,
        filters: Sequence[Filter],
        pairs: tuple[tuple[bytes, bytes], ...],
        limit: int,
        request_id: str = "",
    ) -> None:
        self.redactor = redactor
        self.filters = tuple(filters)
        self.pairs = pairs
        self.limit = limit
        self.request_id = request_id
        self.counts: dict[str, int] = {}
        self.failed: str | None = None
        self._lines: list[bytes] = []  # the lines of the event in progress
        self._splitter = LineSplitter()
        self._size = 0  # bytes held in _lines

    def __call__(self, chunk: bytes) -> list[bytes]:
        if self.failed is not None:
            return []
        if not chunk:
            return self._finish()
        out: list[bytes] = []
        for line in self._splitter.lines(chunk):
            if line:
                self._lines.append(line)
                self._size += len(line) + 1
                if self._size > self.limit:
                    return out + [self._fail("response-too-large", EVENT_TOO_LARGE)]
            else:  # a blank line ends the event
                lines, self._lines, self._size = self._lines, [], 0
                out.append(self._event(lines, ended=True))
                if self.failed is not None:
                    return out
        if self._size + len(self._splitter.pending) > self.limit:
            return out + [self._fail("response-too-large", EVENT_TOO_LARGE)]
        return out

    def _finish(self) -> list[bytes]:
        lines, self._lines = self._lines, []
        if self._splitter.pending:
            lines.append(self._splitter.take_pending())
        if not lines:
            return []
        out = self._event(lines, ended=False)
        return [out] if out else []

    def _fail(self, code: str, reason: str) -> bytes:
        self.failed = reason
        self._lines, self._size = [], 0
        self._splitter.take_pending()  # nothing more is passed: keep nothing
        return error_event(code, reason, self.request_id)

    def _event(self, lines: list[bytes], *, ended: bool) -> bytes:
        data: list[bytes] = []
        other: list[bytes] = []
        for line in lines:
            name, colon, value = line.partition(b":")
            if name == b"data":
                data.append(value[1:] if colon and value[:1] == b" " else value)
            else:
                other.append(line)
        changed = False
        if other and self.redactor is not None:
            text = b"\n".join(other).decode("utf-8", "surrogateescape")
            new, counts = self.redactor.redact_text(text)
            if counts:
                self._count(counts)
                other, changed = new.encode("utf-8", "surrogateescape").split(b"\n"), True
        if data:
            payload = b"\n".join(data)
            rewritten = self._payload(payload)
            if self.failed is not None:
                return rewritten  # the error event
            if rewritten is not None:
                data, changed = rewritten, True
        if changed:
            body = b"".join(line + b"\n" for line in other) + b"".join(b"data: " + d + b"\n" for d in data)
        else:
            body = b"".join(line + b"\n" for line in lines)
        if ended:
            body += b"\n"
        return scrub_bytes(body, self.pairs)

    def _payload(self, payload: bytes) -> Any:
        """The new data lines of a payload, None if unchanged, or the error event (failed)."""
        try:
            doc = parse_json(payload)
        except BodyError:
            if self.filters and payload.strip() != DONE:
                return self._fail("unfilterable-response", EVENT_NOT_JSON)
            if self.redactor is None:
                return None
            text, counts = self.redactor.redact_text(payload.decode("utf-8", "surrogateescape"))
            if not counts:
                return None
            self._count(counts)
            return text.encode("utf-8", "surrogateescape").split(b"\n")
        # the upstream's bytes stay only if no detector finds anything in them and no
        # escape can hide a secret: a value the parse dropped (a duplicate key) or an
        # escaped spelling is otherwise passed on (as rr_addon.core.responses does)
        changed = bool(self.filters) or not self._untouched(payload)
        if self.filters:
            doc = apply_filters(doc, self.filters)
        if self.redactor is not None:
            doc, counts = self.redactor.redact_json(doc)
            if counts:
                self._count(counts)
                changed = True
        if self.pairs and (b"\\u" in payload or b"\\/" in payload):
            doc, n = scrub_document(doc, self.pairs)  # a secret spelled with JSON escapes
            changed = changed or n > 0
        return [dump_json(doc)] if changed else None

    def _untouched(self, payload: bytes) -> bool:
        if self.pairs and b"\\" in payload:
            return False
        if self.redactor is None:
            return True
        return self.redactor.scans_text and unchanged_by(self.redactor, payload)

    def _count(self, counts: dict[str, int]) -> None:
        for k, v in counts.items():
            self.counts[k] = self.counts.get(k, 0) + v


def event_stage(
    pipeline: Any, status: int, content_type: str | None, pairs: tuple[tuple[bytes, bytes], ...], limit: int, request_id: str
) -> EventRedactor | None:
    """The stage for a response that is an event stream redaction or filters (2xx) apply to, else None."""
    if media_type(content_type) != "text/event-stream":
        return None
    filters = pipeline.filters if 200 <= status < 300 else ()
    if pipeline.response_redactor is None and not filters:
        return None
    return EventRedactor(pipeline.response_redactor, filters, pairs, limit, request_id)
