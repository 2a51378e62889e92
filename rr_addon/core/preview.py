"""The body preview a person sees before approving a held request (`rr approvals`).

Pure: bytes and masks in, text out. The preview is stored in the database and
printed on terminals, so it carries no secret and no control character:

- every secret rr knows of is replaced (`secrets`: the caller's rr credential
  as presented, and every form of the target secret it would inject);
- JSON members (and form fields) whose key names a secret (`password`,
  `token`, `api_key`, `authorization`, …) have their values replaced, at any depth;
- the request redactor of the caller's pipeline (the PII detectors the proxy,
  target or credential redacts from requests) is applied, as it would be
  before the request leaves;
- it is cut to `limit` characters, and control characters are escaped.
"""

from __future__ import annotations

import json
from urllib.parse import quote, quote_plus

import re2

from rr_addon.core.terminal import printable

MASK = "****"
PREVIEW_CHARS = 512
_SECRET_WORDS = r"(pass(word|wd|phrase)?|secret|token|api[_-]?key|auth|credential|private[_-]?key|cookie|session|signature|cvc|cvv)"
_SECRET_KEY = re2.compile("(?i)" + _SECRET_WORDS)
_SECRET_FIELD = re2.compile(r"(?i)([^&=\s]*" + _SECRET_WORDS + r"[^&=\s]*=)[^&]*")  # a form field


def _mask_keys(doc: object) -> object:
    if isinstance(doc, dict):
        return {k: MASK if isinstance(k, str) and _SECRET_KEY.search(k) else _mask_keys(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_mask_keys(v) for v in doc]
    return doc


def _form(secret: str) -> str:
    return quote_plus(secret, safe="")


def _masked(text: str, spellings: list[str]) -> str:
    for s in spellings:
        text = text.replace(s, MASK)
    return text


def body_preview(body: bytes | None, secrets: tuple[str, ...] = (), redactor=None, limit: int = PREVIEW_CHARS) -> str:
    """What `rr approvals` shows of a held request's (decoded) body."""
    if not body:
        return ""
    # longest first: one may contain another; percent-encoded spellings too (a form, a query)
    spellings = sorted({f(s) for s in secrets if s for f in (str, quote, _form)}, key=len, reverse=True)
    text = _masked(body.decode("utf-8", "replace"), spellings)
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        doc = None
    if isinstance(doc, (dict, list)):
        doc = _mask_keys(doc)
        if redactor is not None:
            doc, _ = redactor.redact_json(doc)
        # again once decoded: a secret spelled with JSON escapes (`\\u0041`) is plain text now
        text = _masked(json.dumps(doc, ensure_ascii=False, separators=(",", ":")), spellings)
    else:
        text = _SECRET_FIELD.sub(lambda m: m.group(1) + MASK, text)
        if redactor is not None:
            text, _ = redactor.redact_text(text)
    if len(text) > limit:
        text = text[:limit] + "…"
    return printable(text)
