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
import re

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


def _spelled(secret: str) -> re.Pattern[str]:
    """The secret, each character as itself or percent-encoded (either hex case; `+` for a space)."""
    parts = []
    for ch in secret:
        encoded = "".join("%" + "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in f"{b:02x}") for b in ch.encode())
        parts.append(f"(?:{re.escape(ch)}|{encoded}" + (r"|\+)" if ch == " " else ")"))
    return re.compile("".join(parts))


def spellings(secrets) -> list[re.Pattern[str]]:
    """Patterns of the secrets, longest first (one may contain another)."""
    return [_spelled(s) for s in sorted({s for s in secrets if s}, key=len, reverse=True)]


def masked(text: str, patterns: list[re.Pattern[str]]) -> str:
    """`text` with every (percent-encoded) spelling of the secrets replaced by MASK."""
    for p in patterns:
        text = p.sub(MASK, text)
    return text


def body_preview(body: bytes | None, secrets: tuple[str, ...] = (), redactor=None, limit: int = PREVIEW_CHARS) -> str:
    """What `rr approvals` shows of a held request's (decoded) body."""
    if not body:
        return ""
    patterns = spellings(secrets)  # percent-encoded spellings too (a form, a query)
    text = masked(body.decode("utf-8", "replace"), patterns)
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        doc = None
    if isinstance(doc, (dict, list)):
        doc = _mask_keys(doc)
        if redactor is not None:
            doc, _ = redactor.redact_json(doc)
        # again once decoded: a secret spelled with JSON escapes (`\\u0041`) is plain text now
        text = masked(json.dumps(doc, ensure_ascii=False, separators=(",", ":")), patterns)
    else:
        text = _SECRET_FIELD.sub(lambda m: m.group(1) + MASK, text)
        if redactor is not None:
            text, _ = redactor.redact_text(text)
    if len(text) > limit:
        text = text[:limit] + "…"
    return printable(text)
