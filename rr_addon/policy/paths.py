"""Canonical request paths: the one form rules see and the upstream receives.

`canonicalize(raw)` takes an origin-form request target (`/path?query`) and
returns the canonical path, or raises PathError with one of the fixed reasons
below when the path cannot be canonicalised unambiguously.

Canonical form (RFC 3986 §6.2.2 syntax-based normalisation, plus):
- percent-escapes of unreserved characters (ALPHA DIGIT - . _ ~) decoded,
  every other escape kept with upper-case hex;
- characters that may not appear raw in a path (space, `"<>[]^`{|}`, non-ASCII)
  percent-encoded as UTF-8, so `/café` and `/caf%C3%A9` are the same path;
- repeated slashes collapsed (before dot segments are resolved, as nginx's
  merge_slashes does), then dot segments resolved (RFC 3986 §5.2.4);
- an empty path becomes "/"; case is kept (paths are case-sensitive).
The query string is passed through unchanged; the caller decodes it for rules.

Refused, because servers disagree on what they mean:
- `%2F` / `%5C` (encoded separators) and a raw backslash — except `%2F` when
  the target opts in (`allow_encoded_slashes`, for npm's `@scope%2fname` and
  GitLab's `group%2Frepo`): then `%2F` is kept, upper-case, as a literal
  character *within* its segment, never a separator, and a segment whose
  `%2F`-separated pieces include `.` or `..` is still refused (an upstream that
  decodes `%2F` before resolving dot segments would climb);
- a dot segment that only appears after decoding (`%2e%2e`, `.%2E`), or that
  carries parameters (`..;`, which Tomcat and friends treat as `..`);
- `%25` followed by two hex digits in the result (double encoding: `%252e`);
- NUL and other control characters, raw or encoded; a raw `#`;
- `%` not followed by two hex digits; escapes that are not valid UTF-8
  (overlong forms such as `%C0%AE`, surrogates), raw undecodable bytes;
- a path that does not start with "/" (absolute-form, `*`);
- a `..` that would climb above the root (`/../etc`): legitimate clients never
  send one, so it is refused rather than clamped.

Since rr forwards `target`, the upstream receives exactly the path the rules
checked; `canonicalize(c.target) == c` for every result.
"""

from __future__ import annotations

from rr_addon.core import reasons

import re
import string
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes


REASONS = frozenset(
    {
        reasons.PATH_NOT_ABSOLUTE,
        reasons.PATH_INVALID_ESCAPE,
        reasons.PATH_ENCODED_SEPARATOR,
        reasons.PATH_ENCODED_SLASH_DOT_SEGMENT,
        reasons.PATH_BACKSLASH,
        reasons.PATH_ENCODED_DOT_SEGMENT,
        reasons.PATH_DOT_SEGMENT_PARAMETERS,
        reasons.PATH_DOUBLE_ENCODING,
        reasons.PATH_CONTROL_CHARACTER,
        reasons.PATH_FRAGMENT,
        reasons.PATH_INVALID_UTF8,
        reasons.PATH_ABOVE_ROOT,
    }
)

UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
# What may stand for itself in a canonical path: RFC 3986 pchar and "/".
_RAW_OK = UNRESERVED | frozenset("!$&'()*+,;=:@/")
_HEX = frozenset(string.hexdigits)  # ASCII only: int(x, 16) also takes "+f" and " f"
# Already canonical: non-empty segments of plain characters, no dot segments, no '%'.
_SIMPLE = re.compile(r"(?:/[A-Za-z0-9\-._~!$&'()*+,;=:@]+)*/?")
_DOUBLE = re.compile(r"%25[0-9A-Fa-f]{2}")
_PARAMS = re.compile(r";|%3B")


class PathError(ValueError):
    """The path cannot be canonicalised unambiguously; `reason` is a fixed sentence."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CanonicalPath:
    path: str  # canonical path, no query
    query: str | None  # raw query string after the first '?', or None without '?'

    @property
    def target(self) -> str:
        """What to send upstream: the canonical path and the untouched query."""
        return self.path if self.query is None else f"{self.path}?{self.query}"


def canonicalize(raw: str, *, encoded_slashes: bool = False) -> CanonicalPath:
    """`encoded_slashes`: keep `%2F` as a literal within a segment instead of refusing it."""
    path, sep, query = raw.partition("?")
    if not (_SIMPLE.fullmatch(path) and "/." not in path):
        path = _canonical_path(path, encoded_slashes)
    return CanonicalPath(path or "/", query if sep else None)


def _canonical_path(path: str, encoded_slashes: bool = False) -> str:
    if not path:
        return "/"
    if path[0] != "/":
        raise PathError(reasons.PATH_NOT_ABSOLUTE)
    out: list[str] = []
    trailing = False  # the result ends with "/"
    for raw_segment in path[1:].split("/"):
        segment, encoded_dot = _segment(raw_segment, encoded_slashes)
        if encoded_slashes and "%2F" in segment and any(_PARAMS.split(piece, 1)[0] in (".", "..") for piece in segment.split("%2F")):
            raise PathError(reasons.PATH_ENCODED_SLASH_DOT_SEGMENT)
        base = _PARAMS.split(segment, 1)[0]
        if base == "." or base == "..":
            if encoded_dot:
                raise PathError(reasons.PATH_ENCODED_DOT_SEGMENT)
            if base != segment:
                raise PathError(reasons.PATH_DOT_SEGMENT_PARAMETERS)
            if base == "..":
                if not out:
                    raise PathError(reasons.PATH_ABOVE_ROOT)
                out.pop()
            trailing = True
        elif not segment:
            trailing = True  # repeated or trailing slash
        else:
            out.append(segment)
            trailing = False
    result = "/" + "/".join(out) + ("/" if trailing and out else "")
    # Checked on the result: decoding "%25%32%65" also produces "%252e".
    if _DOUBLE.search(result):
        raise PathError(reasons.PATH_DOUBLE_ENCODING)
    return result


def _segment(raw: str, encoded_slashes: bool = False) -> tuple[str, bool]:
    """One segment in canonical form, and whether it decoded a '.'."""
    out: list[str] = []
    encoded_dot = False
    check_utf8 = False
    i, n = 0, len(raw)
    while i < n:
        ch = raw[i]
        if ch == "%":
            hex2 = raw[i + 1 : i + 3]
            if len(hex2) != 2 or not (hex2[0] in _HEX and hex2[1] in _HEX):
                raise PathError(reasons.PATH_INVALID_ESCAPE)
            byte = int(hex2, 16)
            decoded = chr(byte)
            if decoded in UNRESERVED:
                out.append(decoded)
                encoded_dot = encoded_dot or decoded == "."
            elif decoded == "/" and encoded_slashes:
                out.append("%2F")
            elif decoded == "/" or decoded == "\\":
                raise PathError(reasons.PATH_ENCODED_SEPARATOR)
            elif byte < 0x20 or byte == 0x7F:
                raise PathError(reasons.PATH_CONTROL_CHARACTER)
            else:
                out.append("%" + hex2.upper())
                check_utf8 = check_utf8 or byte >= 0x80
            i += 3
            continue
        if ch in _RAW_OK:
            out.append(ch)
        elif ch == "\\":
            raise PathError(reasons.PATH_BACKSLASH)
        elif ch < " " or ch == "\x7f":
            raise PathError(reasons.PATH_CONTROL_CHARACTER)
        elif ch == "#":
            raise PathError(reasons.PATH_FRAGMENT)
        else:
            try:
                encoded = ch.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate: undecodable bytes on the wire
                raise PathError(reasons.PATH_INVALID_UTF8) from None
            out.append("".join(f"%{b:02X}" for b in encoded))
            check_utf8 = check_utf8 or len(encoded) > 1
        i += 1
    segment = "".join(out)
    if check_utf8:
        # Python's strict decoder refuses overlong forms, surrogates and stray bytes.
        try:
            unquote_to_bytes(segment).decode("utf-8")
        except UnicodeDecodeError:
            raise PathError(reasons.PATH_INVALID_UTF8) from None
    return segment, encoded_dot
