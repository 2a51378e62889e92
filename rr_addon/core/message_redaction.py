"""Redaction of WebSocket messages (docs/policy.md: redact). Pure: no I/O.

mitmproxy hands over each message whole, so a value is never cut across
frames here. A message that parses as JSON is redacted as a JSON document and
written back compact; any other message, text or binary, is redacted as text
(undecodable bytes kept as they are), as request and response bodies of any
content type are. Caller messages go through the request redactor, upstream
messages through the response redactor.
"""

from __future__ import annotations

from rr_addon.policy.bodies import BodyError, dump_json, parse_json
from rr_addon.policy.redact import Redactor


def redact_message(redactor: Redactor, content: bytes) -> tuple[bytes | None, dict[str, int]]:
    """The redacted message (None: unchanged) and the counts by detector."""
    try:
        doc = parse_json(content)
    except BodyError:
        text, counts = redactor.redact_text(content.decode("utf-8", "surrogateescape"))
        return (text.encode("utf-8", "surrogateescape") if counts else None), counts
    doc, counts = redactor.redact_json(doc)
    return (dump_json(doc) if counts else None), counts
