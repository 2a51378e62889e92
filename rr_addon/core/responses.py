"""What happens to a response body before the caller sees it (docs/policy.md: filters; docs/security.md).

`Pipeline` holds what the four scopes of one (caller, target, credential)
configured: stacked filters, the response and request redactors and the
request validations. `process_response` runs it on one buffered body:
decode (capped) → parse (exact numbers) → filters (2xx only) → redaction →
scrubbing of echoed injected secrets → serialise, uncompressed. It never
raises for a bad body: it returns a deny Decision instead (fail closed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from rr_addon.policy.bodies import BodyError, DecodedTooLarge, decode_content, dump_json, is_json_content_type, media_type, parse_json
from rr_addon.policy.filters import Filter, apply_filters
from rr_addon.policy.redact import Redactor, scrub_document
from rr_addon.core.reasons import RESPONSE_BODY_UNSCRUBBABLE
from rr_addon.policy.scrub import scrub_bytes
from rr_addon.core.types import Decision
from rr_addon.policy.validation import Check
from rr_addon.core import reasons


NO_BODY_STATUS = frozenset({101, 204, 205, 304})


@dataclass(frozen=True, slots=True)
class Pipeline:
    filters: tuple[Filter, ...] = ()
    response_redactor: Redactor | None = None
    request_redactor: Redactor | None = None
    checks: tuple[Check, ...] = ()

    def applies(self, status: int, content_type: str | None) -> bool:
        """Whether a response with this status and type must be buffered and processed."""
        if status in NO_BODY_STATUS:
            return False
        if self.filters and 200 <= status < 300:
            return True
        return self.response_redactor is not None and redactable(content_type)


EMPTY = Pipeline()


# Media types whose bodies are binary: redaction leaves them untouched. Everything
# else (no Content-Type, NDJSON, XML, CSV, YAML, vendor types…) is redacted as text,
# so an upstream — or a caller asking it for another format — cannot step around
# redaction with a label rr does not know (fail closed).
BINARY_PREFIXES = ("image/", "audio/", "video/", "font/", "model/", "binary/", "application/grpc")
BINARY_TYPES = frozenset({
    "application/octet-stream", "application/zip", "application/gzip", "application/x-gzip", "application/x-tar",
    "application/x-bzip2", "application/x-xz", "application/x-7z-compressed", "application/zstd", "application/pdf",
    "application/wasm", "application/protobuf", "application/x-protobuf", "application/msgpack", "application/x-msgpack",
    "application/cbor", "application/java-archive", "application/vnd.android.package-archive",
    "application/x-git-upload-pack-result", "application/x-git-receive-pack-result",
})
BINARY_SUFFIXES = ("+zip", "+gzip", "+cbor", "+proto")


def is_binary_media_type(content_type: str | None) -> bool:
    mt = media_type(content_type)
    return mt in BINARY_TYPES or mt.startswith(BINARY_PREFIXES) or mt.endswith(BINARY_SUFFIXES)


def redactable(content_type: str | None) -> bool:
    """Every body but a binary one is redacted: JSON as a document, the rest as text
    (a missing Content-Type included). Event streams are redacted event by event as
    they stream (rr_addon.core.event_redaction); one in a coding rr cannot encode
    again is held back and redacted whole, as text."""
    return not is_binary_media_type(content_type)


@dataclass(frozen=True, slots=True)
class Processed:
    body: bytes | None = None  # the new identity-encoded body; None: send the original unchanged
    decision: Decision | None = None  # set when the body must not reach the caller
    redactions: dict[str, int] = field(default_factory=dict)


def process_response(
    pipeline: Pipeline,
    status: int,
    content_type: str | None,
    content_encoding: str | None,
    raw: bytes,
    scrub: tuple[tuple[bytes, bytes], ...],
    limit: int,
    inspect: Callable[[Any], None] | None = None,
) -> Processed:
    """`inspect`, if given, sees the parsed document before any filter (meters read their values there)."""
    filtering = bool(pipeline.filters) and 200 <= status < 300
    redactor = pipeline.response_redactor if redactable(content_type) else None
    is_json = is_json_content_type(content_type)
    must = filtering or redactor is not None  # work that must not be skipped: fail closed
    try:
        body = decode_content(raw, content_encoding, limit=limit)
    except DecodedTooLarge:
        return Processed(decision=Decision.deny("response-too-large", reasons.RESPONSE_TOO_LARGE, detail=f"over {limit} bytes decoded"))
    except BodyError as e:
        if must:
            return Processed(decision=Decision.deny("unfilterable-response", reasons.RESPONSE_NOT_DECODABLE, detail=str(e)))
        if scrub:  # the caller may decode what rr cannot, secret and all: never pass it on (fail closed)
            return Processed(decision=Decision.deny("upstream-unavailable", RESPONSE_BODY_UNSCRUBBABLE, detail=str(e)))
        return Processed(body=None)
    counts: dict[str, int] = {}
    if is_json and (must or scrub):
        walk_scrub = bool(scrub) and (b"\\u" in body or b"\\/" in body or any(secret in body for secret, _ in scrub))
        text_scan = redactor is not None and redactor.scans_text and not walk_scrub
        if text_scan and not filtering and inspect is None and unchanged_by(redactor, body):
            # nothing to redact: no parse, no re-serialisation; the original (still encoded) goes on
            return Processed(body=scrub_bytes(body, scrub) if scrub else None)
        try:
            doc: Any = parse_json(body)
            if inspect is not None:
                inspect(doc)
            if filtering:
                doc = apply_filters(doc, pipeline.filters)
            if text_scan:  # redact the serialised text: only the literals with a match are touched
                out, counts = redactor.redact_json_text(dump_json(doc))
                return Processed(body=scrub_bytes(out, scrub), redactions=counts)
            if redactor is not None:
                doc, counts = redactor.redact_json(doc)
            if walk_scrub:
                doc, _ = scrub_document(doc, scrub)  # a secret echoed, maybe \u- or \/-escaped: walk the strings
            return Processed(body=scrub_bytes(dump_json(doc), scrub), redactions=counts)
        except BodyError as e:
            if filtering:
                return Processed(decision=Decision.deny("unfilterable-response", reasons.RESPONSE_NOT_JSON, detail=str(e)))
            # JSON-labelled but not JSON: redact and scrub it as text below
    elif filtering:
        return Processed(decision=Decision.deny("unfilterable-response", reasons.RESPONSE_NOT_JSON, detail=f"content type {media_type(content_type) or 'none'}"))
    if redactor is not None:
        text, counts = redactor.redact_text(body.decode("utf-8", "surrogateescape"))
        body = text.encode("utf-8", "surrogateescape")
    return Processed(body=scrub_bytes(body, scrub), redactions=counts)


def unchanged_by(redactor: Redactor, body: bytes) -> bool:
    """Whether redaction leaves this JSON-labelled body as it is, whether it
    parses (redact_json) or not (redact_text): UTF-8 without a backslash (no
    escape can hide a match) in which no detector finds anything at all."""
    if b"\\" in body:
        return False
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return False
    return redactor.finds_nothing(body)


class _BoundedCopy:
    """Keeps what passes in `buf` up to `limit` bytes; once more would pass, keeps
    nothing (`over`): a body too large to hold is never half-held."""

    __slots__ = ("limit", "buf", "over")

    def __init__(self, limit: int, *, over: bool = False):
        self.limit = limit
        self.buf = bytearray()
        self.over = over

    def _keep(self, chunk: bytes) -> None:
        if chunk and not self.over:
            if len(self.buf) + len(chunk) > self.limit:
                self.over = True
                self.buf = bytearray()
            else:
                self.buf += chunk


class BodyCollector(_BoundedCopy):
    """A `response.stream` callable that keeps the body (up to `limit` bytes) and
    passes nothing on: the body is processed and sent whole after the response
    hook (see rr_addon.mitm.wire.defer). Over the limit it keeps nothing more."""

    __slots__ = ("count",)

    def __init__(self, limit: int, *, over: bool = False):
        super().__init__(limit, over=over)
        self.count = 0

    def __call__(self, chunk: bytes) -> bytes:
        self.count += len(chunk)
        self._keep(chunk)
        return b""


class BodyCopy(_BoundedCopy):
    """A stream tap that keeps a copy of what passes, up to `limit` bytes, for a meter
    to read after the response: the response itself streams on, never held back."""

    __slots__ = ()

    def __call__(self, chunk: bytes) -> None:
        self._keep(chunk)
