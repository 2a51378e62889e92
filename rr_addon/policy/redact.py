"""Redaction of PII and secrets in JSON string values and text bodies.

How it stays fast: the strings of a document are joined into one UTF-8
buffer (keys and structure are never touched), one RE2::Set pass says which
detectors occur at all, and each of those scans the buffer once. Checks such
as Luhn or mod-97 run on candidates only; a rejected candidate resumes the scan
one character later, so a real card right after a fake one is still found.
Strings are joined with "\\n\\0\\n": built-in patterns never cross a NUL, a match
that crosses anyway (a custom pattern) is redone string by string, and `^`/`$`
in custom patterns (multi-line mode) anchor at string and line boundaries.

Matches of different detectors that overlap: the earliest start wins, then the
longest, and the loser searches again after the winner. A replacement can
expose a value glued to the one replaced ("x@y.co415-555-0100"), so changed
strings are scanned again (built-in detectors only, at most twice more): the
output holds nothing a built-in detector would match.
`mask` writes "[REDACTED:EMAIL]"; `hash` writes "[EMAIL:<12 hex>]",
HMAC-SHA256 under the proxy's key of the normalised value (emails lower-cased,
cards/phones/IBANs without separators), so one value always gives one
pseudonym and joins still work. Counts say how many values each detector
replaced; values themselves are never returned.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import hmac
import ipaddress
import itertools
import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import orjson
import re2

from rr_addon.policy.bodies import MAX_DEPTH, JsonError, JsonTooDeep
from rr_addon.policy.json_text import JsonStrings, value_spans
from rr_addon.policy.scrub import scrub_text

MASK = "mask"
HASH = "hash"
HASH_HEX_CHARS = 12  # 48 bits: collisions stay unlikely below millions of distinct values
_SEP = "\n\x00\n"
_SEP_B = _SEP.encode()

Check = Callable[[bytes, int, int], "int | None"]  # (buffer, start, end) -> end to redact, or None


@dataclass(frozen=True, slots=True)
class Detector:
    name: str  # key in the counts: a built-in name, a custom entry's name, or "custom"
    label: str  # what the replacement shows: EMAIL, CUSTOM, ...
    pattern: str  # RE2
    check: Check | None = None
    normalise: Callable[[str], str] = str


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    options.never_capture = True  # only the whole match is used; captures make RE2 slower
    return options


# --------------------------------------------------------------------------
# Candidate checks


def _text(data: bytes, s: int, e: int) -> str:
    return data[s:e].decode("utf-8", "surrogatepass")


_DOUBLED = bytes.maketrans(b"0123456789", b"0246813579")  # Luhn: 2*d, minus 9 when over 9


def luhn_valid(digits: str | bytes) -> bool:
    """Luhn checksum of ASCII digits (byte arithmetic: ~20x faster than int() per digit)."""
    b = digits.encode("ascii") if isinstance(digits, str) else digits
    return (sum(b[-1::-2]) + sum(b[-2::-2].translate(_DOUBLED)) - 48 * len(b)) % 10 == 0


def _card(data: bytes, s: int, e: int) -> int | None:
    digits = data[s:e].translate(None, b" -")
    # 13-19 digits; issuer ranges 2-6 (Mastercard, Amex/Diners/JCB, Visa, Mastercard, Discover/UnionPay):
    # keeps 13-digit millisecond timestamps and other long ids from passing on Luhn luck alone.
    if 13 <= len(digits) <= 19 and 50 <= digits[0] <= 54 and luhn_valid(digits):
        return e
    return None


# ISO 13616 IBAN lengths per country (SWIFT registry).
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25,
    "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18,
    "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33,
    "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}


def iban_valid(iban: str) -> bool:
    if IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _iban(data: bytes, s: int, e: int) -> int | None:
    # The candidate may run into the next word ("... 0130 00 EUR"): cut it at
    # the country's length, which must end at a space or the candidate's end.
    text = _text(data, s, e)
    want = IBAN_LENGTHS.get(text[:2])
    if want is None:
        return None
    count = 0
    for i, ch in enumerate(text):
        if ch != " ":
            count += 1
            if count == want:
                if i + 1 < len(text) and text[i + 1] != " ":
                    return None
                return s + i + 1 if iban_valid(text[: i + 1].replace(" ", "")) else None
    return None


def _ssn(data: bytes, s: int, e: int) -> int | None:
    digits = data[s:e].translate(None, b" -").decode("ascii")
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return None  # never issued
    return e


def _phone(data: bytes, s: int, e: int) -> int | None:
    text = data[s:e]
    digits = text.translate(None, b" ().-+")
    if text.startswith(b"+"):
        return e if 8 <= len(digits) <= 15 else None  # E.164: at most 15 digits
    # North American numbers: area code and exchange never start with 0 or 1
    return e if len(digits) == 10 and digits[0] >= 50 and digits[3] >= 50 else None


_HEX = frozenset(b"0123456789abcdefABCDEF:")


def _ipv6(data: bytes, s: int, e: int) -> int | None:
    if (s > 0 and data[s - 1] in _HEX) or (e < len(data) and (data[e] in _HEX or data[e] == 0x2E)):
        return None  # part of a longer hex or dotted run
    text = _text(data, s, e)
    if sum(1 for g in text.split(":") if g) < 2:
        return None  # "::", "std::", "a:" are not addresses worth masking
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return None
    return e


# Things that look like user@host.tld but are file names ("logo@2x.png").
_FILE_TLDS = frozenset("png jpg jpeg gif svg webp ico bmp tif tiff avif heic js mjs css map json txt pdf zip".split())


_FILE_TLDS_B = frozenset(t.encode() for t in _FILE_TLDS)


def _email(data: bytes, s: int, e: int) -> int | None:
    # the pattern ends in ".<letters>": the TLD is after the last dot (a non-ASCII one is never a file suffix)
    return None if data[data.rfind(b".", s, e) + 1 : e].lower() in _FILE_TLDS_B else e


def _norm_digits(value: str) -> str:
    return "".join(c for c in value if c.isalnum()).upper()


def _norm_ip(value: str) -> str:
    try:
        return ipaddress.ip_address(value).compressed
    except ValueError:
        return value


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"\b{_OCTET}(?:\.{_OCTET}){{3}}\b"
_PEM_END = r"-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----"

_SECRETS = "|".join(
    [
        r"\b(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA)[A-Z0-9]{16}\b",  # AWS access key ids
        r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,255}\b",  # GitHub tokens
        r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b",  # GitHub fine-grained tokens
        r"\bgl(?:pat|dt|rt|ptt|soat|ft|imt|oas)-[A-Za-z0-9_-]{20,}",  # GitLab tokens
        r"\bxox[abposr]-[A-Za-z0-9-]{10,}",  # Slack tokens
        r"\bxapp-[0-9]-[A-Za-z0-9-]{10,}",  # Slack app tokens
        r"https://hooks\.slack\.com/services/[A-Za-z0-9_/-]{20,}",  # Slack webhooks
        r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{10,}\b",  # Stripe secret / restricted keys
        r"\bwhsec_[A-Za-z0-9+/=]{20,}",  # Stripe webhook secrets
        r"\bsk-(?:proj-|svcacct-|admin-|ant-(?:api|admin)[0-9]{2}-)?[A-Za-z0-9_-]{20,}",  # OpenAI / Anthropic keys
        r"\bAIza[0-9A-Za-z_-]{35}",  # Google API keys
        r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",  # JWTs (signature may be empty)
        # PEM private keys; a key cut off before its END line is redacted to the end of its string
        rf"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----(?:[^\x00]*?{_PEM_END}|[^\x00]*)",
    ]
)

BUILTIN: dict[str, Detector] = {
    d.name: d
    for d in [
        Detector("secret", "SECRET", _SECRETS),
        Detector(
            "email",
            "EMAIL",
            # letters and digits of any script (internationalised addresses, RFC 6531)
            r"[\p{L}\p{N}._%+-]+@(?:[\p{L}\p{N}-]+\.)+\p{L}{2,}",
            _email,
            str.lower,
        ),
        Detector("iban", "IBAN", r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}\b", _iban, _norm_digits),
        Detector("credit_card", "CREDIT_CARD", r"\b[0-9](?:[ -]?[0-9]){12,18}\b", _card, _norm_digits),
        Detector("us_ssn", "US_SSN", r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b|\b[0-9]{3} [0-9]{2} [0-9]{4}\b", _ssn, _norm_digits),
        Detector(
            "ip_address",
            "IP_ADDRESS",
            # IPv4; IPv6 (with an embedded IPv4 tail first, so it is taken whole), checked by `ipaddress`
            _IPV4 + r"|(?:[0-9A-Fa-f]{0,4}:){2,6}" + _OCTET + r"(?:\." + _OCTET + r"){3}\b|(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}",
            lambda data, s, e: e if data[s:e].count(b":") == 0 else _ipv6(data, s, e),
            _norm_ip,
        ),
        Detector(
            "phone",
            "PHONE",
            r"\+[1-9][0-9]{0,2}(?:[ .-]?(?:\([0-9]{1,4}\)|[0-9]{1,5})){2,6}\b"  # international, +CC ...
            r"|(?:\([0-9]{3}\) ?|\b[0-9]{3}[ .-])[0-9]{3}[ .-][0-9]{4}\b",  # North American, with separators
            _phone,
            _norm_digits,
        ),
    ]
}
DETECTOR_NAMES = tuple(BUILTIN)


def check_custom_pattern(pattern: str) -> str:
    """`pattern` if RE2 can run it, else ValueError saying why (look-around and
    back-references are the usual culprits)."""
    if not pattern:
        raise ValueError("an empty pattern matches everything")
    try:
        rx = re2.compile("(?m)" + pattern, _options())
    except re2.error as e:
        raw = e.args[0] if e.args else b""
        detail = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        hint = ""
        if "(?=" in detail or "(?!" in detail or "(?<" in detail:
            hint = " (RE2 has no look-around)"
        elif "invalid escape sequence: \\" in detail and detail[-1:].isdigit():
            hint = " (RE2 has no back-references)"
        raise ValueError(f"not a valid RE2 regex: {detail}{hint}") from None
    if rx.search("") is not None:
        raise ValueError("the pattern matches the empty string")
    return pattern


def custom_detector(pattern: str, name: str | None = None) -> Detector:
    """A `{custom: pattern, name: ...}` entry. Multi-line mode: `^`/`$` anchor
    at the start/end of each string value and each line in it."""
    check_custom_pattern(pattern)
    return Detector(name or "custom", (name or "custom").upper(), "(?m)" + pattern)


# --------------------------------------------------------------------------
# Scanning


def _spans(pattern: str) -> Callable[[bytes, int, int], list[tuple[int, int]]]:
    """spans(data, pos, end)[0] is the first match's (start, end) in data[pos:end], (-1, -1) for none."""
    rx = re2.compile(pattern, _options())
    low = getattr(rx, "_regexp", None)
    anchor = getattr(getattr(re2, "_Anchor", None), "UNANCHORED", None)
    if low is not None and anchor is not None:
        # The wrapper's search() builds a generator and a Match object per
        # call (~3 us); the underlying RE2::Match returns spans directly.
        return functools.partial(low.Match, anchor)

    def spans(data: bytes, pos: int, end: int) -> list[tuple[int, int]]:  # pragma: no cover - other google-re2 versions
        m = rx.search(data, pos, end)
        return [(-1, -1) if m is None else m.span()]

    return spans  # pragma: no cover


def raw_pattern(pattern: str) -> str:
    """The variant of a built-in pattern that runs over a JSON text: the one
    class that may cross a string's end in the joined buffer (the PEM body,
    "anything but NUL") also stops at a quote. Every other built-in pattern
    matches no quote, NUL or newline, so on a literal without escapes it finds
    exactly what it finds on the decoded string (see `redact_json_text`)."""
    return pattern.replace(r"[^\x00]", r'[^\x00"]')


class _Compiled:
    """A detector's regex and the fastest way to call it."""

    __slots__ = ("detector", "action", "spans", "raw_spans", "mask", "mask_text")

    def __init__(self, detector: Detector, action: str):
        self.detector = detector
        self.action = action
        self.mask_text = f"[REDACTED:{detector.label}]"
        self.mask = self.mask_text.encode()
        self.spans = _spans(detector.pattern)
        raw = raw_pattern(detector.pattern)
        self.raw_spans = self.spans if raw == detector.pattern else _spans(raw)

    def replace(self, value: bytes, key: bytes) -> bytes:
        if self.action == MASK:
            return self.mask
        d = self.detector
        return f"[{d.label}:{pseudonym(key, d.label, d.normalise(_text(value, 0, len(value))))}]".encode()

    def find_all(self, data: bytes, i: int) -> list[tuple[int, int, int, int]]:
        """find(data, raw=True) as (start, -end, i, -1) tuples, in one loop."""
        check, spans = self.detector.check, self.raw_spans
        out: list[tuple[int, int, int, int]] = []
        add = out.append
        pos = 0
        n = len(data)
        while pos <= n:
            s, e = spans(data, pos, n)[0]
            if s < 0:
                break
            if check is not None:
                stop = check(data, s, e)
                if stop is None:
                    pos = s + 1
                    continue
                e = stop
            if e > s:
                add((s, -e, i, -1))
                pos = e
            else:
                pos = s + 1
        return out

    def find(self, data: bytes, pos: int = 0, end: int | None = None, *, raw: bool = False) -> Iterable[tuple[int, int]]:
        """Validated matches in data[pos:end] (assertions still see the bytes around it).
        `raw`: data is a JSON text (the pattern variant that stops at a quote)."""
        check = self.detector.check
        spans = self.raw_spans if raw else self.spans
        n = len(data) if end is None else end
        while pos <= n:
            s, e = spans(data, pos, n)[0]
            if s < 0:
                return
            if check is not None:
                stop = check(data, s, e)
                if stop is None:
                    pos = s + 1  # a later start inside the rejected candidate may still match
                    continue
                e = stop
            if e > s:
                yield s, e
            pos = e if e > s else s + 1


class Redactor:
    """Compiled detectors with their actions. Build once per configuration."""

    def __init__(self, detectors: Sequence[tuple[Detector, str]], key: bytes):
        if not detectors:
            raise ValueError("a redactor needs at least one detector")
        self._key = key
        self._compiled = [_Compiled(d, action) for d, action in detectors]
        # Index 0 is an always-matching sentinel: the Python wrapper of RE2::Set returns
        # an empty result when the DFA runs out of memory, which must not read as "no
        # PII here" (then every detector runs; single regexes fall back to the NFA).
        self._set = re2.Set.SearchSet(_options())
        self._set.Add("")
        for c in self._compiled:
            self._set.Add(c.detector.pattern)
        self._set.Compile()
        self._builtin = frozenset(i for i, c in enumerate(self._compiled) if BUILTIN.get(c.detector.name) is c.detector)
        # redact_json_text's exactness argument holds for the built-in patterns only
        self.scans_text = len(self._builtin) == len(self._compiled)
        self._raw_set = re2.Set.SearchSet(_options())
        self._raw_set.Add("")  # the same always-matching sentinel
        for c in self._compiled:
            self._raw_set.Add(raw_pattern(c.detector.pattern))
        self._raw_set.Compile()
        # Masks the re-scan may skip: a string that is exactly one of them (a value
        # masked whole) gives the built-in detectors nothing, checked here once.
        masks = {c.mask_text for c in self._compiled if c.action == MASK}
        self._inert = frozenset(m for m in masks if not self._pass([m, m], builtin_only=True)[0])

    @property
    def detectors(self) -> tuple[str, ...]:
        return tuple(c.detector.name for c in self._compiled)

    def redact_text(self, text: str) -> tuple[str, dict[str, int]]:
        changed, counts = self._redact_strings([text])
        return changed.get(0, text), counts

    def redact_json(self, doc: Any) -> tuple[Any, dict[str, int]]:
        """Redact every string value (keys untouched). Containers are changed in
        place; the (possibly new) root is returned with the counts."""
        if type(doc) is str:
            changed, counts = self._redact_strings([doc])
            return changed.get(0, doc), counts
        if type(doc) is not dict and type(doc) is not list:
            return doc, {}
        containers, keys, strings = _collect_strings(doc)
        if not strings:
            return doc, {}
        changed, counts = self._redact_strings(strings)
        for i, new in changed.items():
            containers[i][keys[i]] = new
        return doc, counts

    def finds_nothing(self, data: bytes) -> bool:
        """Whether no detector accepts a match anywhere in `data` read as one text
        (keys, numbers and escapes included, built-in detectors only: `scans_text`).
        For UTF-8 without a backslash this means: `redact_json` of its parse and
        `redact_text` of it change nothing. Raises ValueError for custom detectors."""
        if not self.scans_text:
            raise ValueError("finds_nothing needs built-in detectors only")
        found = self._raw_set.Match(data)
        hits = [i - 1 for i in found if i] if found else range(len(self._compiled))
        return not any(next(iter(self._compiled[i].find(data, raw=True)), None) for i in hits)

    def redact_json_text(self, data: bytes) -> tuple[bytes, dict[str, int]]:
        """`redact_json` on a JSON text, without parsing it: the same values
        redacted, spliced into the original bytes (formatting, keys, numbers and
        untouched escapes stay as they were). `data` must be valid JSON
        (`parse_json` accepts it) and the detectors built-in (`scans_text`).

        Why it is exact: a built-in match never holds a quote, NUL or newline, so
        on a JSON text it never leaves a token, and within a string literal
        without escapes (whose bytes are its UTF-8 value, between two quotes
        that, like the joined buffer's "\\n", are non-word, non-hex characters) the
        scan finds what the joined scan finds there. Matches in keys, numbers
        and literals with escapes are dropped; literals with escapes (`\\u0040`,
        `\\/`, a match split by an escape) are decoded and redacted the usual way."""
        if not self.scans_text:
            raise ValueError("redact_json_text needs built-in detectors only")
        found = self._raw_set.Match(data)
        hits = [i - 1 for i in found if i] if found else list(range(len(self._compiled)))
        backslash = b"\\" in data
        if not hits and not backslash:
            return data, {}
        raw: list[tuple[int, int, int, int]] = []  # (start, -end, detector, literal), as _pass builds them
        for i in hits:
            raw.extend(self._compiled[i].find_all(data, i))
        if len(hits) > 1:
            raw.sort()
        escaped: list[int] = []
        if backslash:
            strings = JsonStrings(data)
            keys = strings.keys
            spans = [(s, e, i, k) for (s, e, i, _), k in zip(raw, strings.locate_all([r[0] for r in raw])) if k >= 0 and not keys[k]]
            escaped = [k for k in strings.with_escapes() if not keys[k]]
            if escaped:
                skip = frozenset(escaped)
                spans = [span for span in spans if span[3] not in skip]
            starts, ends = strings.starts, strings.ends
        else:  # every quote ends a literal: placed in one loop (json_text.value_spans)
            spans, starts, ends = value_spans(data, raw)
        used = {span[2] for span in spans} if len(hits) > 1 else hits
        if len(used) > 1:
            spans = self._resolve(data, ends, set(spans))
        changed, counts = self._replace(data, starts, ends, spans)
        changed, counts = self._rescan(changed, counts)
        if escaped:
            values = [_decode_literal(data, starts[k], ends[k]) for k in escaped]
            more, extra = self._redact_strings(values)
            for j, new in more.items():
                changed[escaped[j]] = new
            for name, n in extra.items():
                counts[name] = counts.get(name, 0) + n
        if not changed:
            return data, counts
        pieces: list[bytes] = []
        pos = 0
        encoded: dict[str, bytes] = {}  # masks repeat
        for k in sorted(changed, key=starts.__getitem__):
            pieces.append(data[pos : starts[k]])
            value = changed[k]
            literal = encoded.get(value)
            if literal is None:
                literal = encoded[value] = _encode_literal(value)
            pieces.append(literal)
            pos = ends[k]
        pieces.append(data[pos:])
        return b"".join(pieces), counts

    def _redact_strings(self, strings: list[str]) -> tuple[dict[int, str], dict[str, int]]:
        return self._rescan(*self._pass(strings, builtin_only=False))

    def _rescan(self, changed: dict[int, str], counts: dict[str, int]) -> tuple[dict[int, str], dict[str, int]]:
        # Replacing a value changes its neighbours' context: "a@b.co415-555-0100" shows a
        # phone number once the email is masked. Changed strings are scanned again by the
        # built-in detectors (they never match a replacement; a custom pattern might).
        inert = self._inert
        todo = {k: v for k, v in changed.items() if v not in inert} if inert else changed
        for _ in range(2):
            if not todo or not self._builtin:
                break
            index = list(todo)
            again, more = self._pass([todo[i] for i in index], builtin_only=True)
            todo = {index[j]: new for j, new in again.items()}
            changed.update(todo)
            for name, n in more.items():
                counts[name] = counts.get(name, 0) + n
        return changed, counts

    def _pass(self, strings: list[str], builtin_only: bool) -> tuple[dict[int, str], dict[str, int]]:
        joined = _SEP.join(strings)
        if joined.isascii():
            data = joined.encode("ascii")
            lengths = [len(s) for s in strings]
        else:  # str.isascii() is O(1): only non-ASCII strings are encoded twice
            data = joined.encode("utf-8", "surrogatepass")
            lengths = [len(s) if s.isascii() else len(s.encode("utf-8", "surrogatepass")) for s in strings]
        found = self._set.Match(data)
        hits = [i - 1 for i in found if i] if found else list(range(len(self._compiled)))
        if hits and builtin_only:
            hits = [i for i in hits if i in self._builtin]
        if not hits:
            return {}, {}
        sep = len(_SEP_B)
        starts = list(itertools.accumulate((n + sep for n in lengths[:-1]), initial=0))
        ends = [a + n for a, n in zip(starts, lengths)]
        spans: list[tuple[int, int, int, int]] = []  # (start, -end, detector, string)
        add = spans.append
        find_string = bisect.bisect_right
        crossed = False
        for i in sorted(hits):
            compiled = self._compiled[i]
            for s, e in compiled.find(data):
                k = find_string(starts, s) - 1
                if e <= ends[k]:
                    add((s, -e, i, k))
                    continue
                # crossed into the next string: redo those strings one by one
                crossed = True
                for j in range(k, find_string(starts, e - 1)):
                    base = starts[j]
                    spans.extend((base + a, -base - b, i, j) for a, b in compiled.find(data[base : ends[j]]))
        if len(hits) == 1 and not crossed:
            # one detector's matches come in order and never overlap: nothing to resolve
            return self._replace(data, starts, ends, spans)
        return self._replace(data, starts, ends, self._resolve(data, ends, set(spans)))

    def _resolve(self, data: bytes, ends: list[int], spans: set[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
        """Non-overlapping spans: the earliest start wins, then the longest. A
        detector whose match was overlapped searches again after the winner
        ("10.0.0.1john@example.com" still yields the email)."""
        order = sorted(spans)
        kept: list[tuple[int, int, int, int]] = []
        last_end = j = 0
        while j < len(order):
            s, neg_e, i, k = span = order[j]
            j += 1
            if s >= last_end:
                kept.append(span)
                last_end = -neg_e
                continue
            if last_end < ends[k]:  # the winner is in the same string (matches never cross strings)
                again = next(iter(self._compiled[i].find(data, last_end, ends[k])), None)
                if again is not None and (again[0], -again[1], i, k) not in spans:
                    spans.add((again[0], -again[1], i, k))
                    bisect.insort(order, (again[0], -again[1], i, k), lo=j)
        return kept

    def _replace(self, data: bytes, starts: list[int], ends: list[int], spans: list[tuple[int, int, int, int]]) -> tuple[dict[int, str], dict[str, int]]:
        """Splice replacements into their strings; `spans` sorted and disjoint."""
        counts = [0] * len(self._compiled)
        changed: dict[int, str] = {}
        pieces: list[bytes] = []
        current = -1  # string being rebuilt
        pos = 0
        for s, neg_e, i, k in spans:
            e = -neg_e
            if s == starts[k] and e == ends[k]:  # the whole string is the value: no splicing
                c = self._compiled[i]
                changed[k] = c.mask_text if c.action == MASK else c.replace(data[s:e], self._key).decode("utf-8", "surrogatepass")
                counts[i] += 1
                continue
            if k != current:
                if current >= 0:
                    pieces.append(data[pos : ends[current]])
                    changed[current] = b"".join(pieces).decode("utf-8", "surrogatepass")
                current, pos, pieces = k, starts[k], []
            pieces.append(data[pos:s])
            pieces.append(self._compiled[i].replace(data[s:e], self._key))
            counts[i] += 1
            pos = e
        if current >= 0:
            pieces.append(data[pos : ends[current]])
            changed[current] = b"".join(pieces).decode("utf-8", "surrogatepass")
        totals: dict[str, int] = {}
        for c, n in zip(self._compiled, counts):
            if n:
                totals[c.detector.name] = totals.get(c.detector.name, 0) + n
        return changed, totals


def _decode_literal(data: bytes, start: int, end: int) -> str:
    """The value of the string literal whose content is data[start:end]."""
    return _LITERAL.decode(data[start - 1 : end + 1].decode("utf-8"))


def _encode_literal(value: str) -> bytes:
    """A string's content as dump_json writes it (without the quotes)."""
    try:
        return orjson.dumps(value)[1:-1]
    except orjson.JSONEncodeError as e:  # a lone surrogate: parse_json refuses them, so never from a parsed text
        raise JsonError(f"cannot write JSON: {e}") from None


_LITERAL = json.JSONDecoder()


def pseudonym(key: bytes, label: str, value: str) -> str:
    """HMAC-SHA256 under the proxy's key; the "pseudonym" prefix keeps it apart
    from the credential digests made with the same key (`core.digests`)."""
    msg = b"pseudonym\x00" + label.encode() + b"\x00" + value.encode("utf-8", "surrogatepass")
    return hmac.new(key, msg, hashlib.sha256).hexdigest()[:HASH_HEX_CHARS]


def _collect_strings(doc: Any) -> tuple[list[Any], list[Any], list[str]]:
    """Containers, keys and values of every string value (iterative: no depth limit needed)."""
    containers: list[Any] = []
    keys: list[Any] = []
    strings: list[str] = []
    add_container, add_key, add_string = containers.append, keys.append, strings.append
    stack = [doc]
    pop, push = stack.pop, stack.append
    while stack:
        node = pop()
        if type(node) is dict:
            for k, v in node.items():
                t = type(v)
                if t is str:
                    add_container(node)
                    add_key(k)
                    add_string(v)
                elif t is dict or t is list:
                    push(v)
        else:
            i = 0
            for v in node:
                t = type(v)
                if t is str:
                    add_container(node)
                    add_key(i)
                    add_string(v)
                elif t is dict or t is list:
                    push(v)
                i += 1
    return containers, keys, strings


# --------------------------------------------------------------------------
# Configuration -> Redactor


def compile_redactor(entries: Iterable[Any], *, key: bytes, direction: str) -> Redactor | None:
    """One Redactor for every `redact:` entry that applies to `direction`
    ("response" or "request"; entries saying "both" apply to either). A detector
    named in several entries is masked if any of them masks. None if nothing applies."""
    if direction not in ("response", "request"):
        raise ValueError(f"direction is 'response' or 'request', not {direction!r}")
    chosen: dict[tuple[str, str], tuple[Detector, str]] = {}
    for entry in entries:
        if entry.direction not in (direction, "both"):
            continue
        for spec in entry.detectors:
            if isinstance(spec, str):
                detector = BUILTIN[spec]
            else:
                detector = custom_detector(spec.custom, spec.name)
            ident = (detector.name, detector.pattern)
            if ident in chosen and chosen[ident][1] == MASK:
                continue
            chosen[ident] = (detector, entry.action)
    if not chosen:
        return None
    return Redactor(list(chosen.values()), key)


# --------------------------------------------------------------------------
# Injected secrets echoed back (docs/security.md) inside a parsed JSON document


def scrub_document(doc: Any, pairs: tuple[tuple[bytes, bytes], ...]) -> tuple[Any, int]:
    """Replace known secrets (pairs from `rr_addon.policy.scrub.replacement_pairs`)
    in every string and key of `doc`. Complements `scrub_bytes` on the raw body:
    after parsing, a secret the upstream wrote with JSON escapes (`\\u0073k_...`,
    `\\/`) is plain text again. Returns the document and how many strings changed."""
    if not pairs:
        return doc, 0
    count = 0

    def fix(s: str) -> str:
        nonlocal count
        new = scrub_text(s, pairs)
        if new != s:
            count += 1
        return new

    def walk(node: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise JsonTooDeep(f"JSON nested deeper than {MAX_DEPTH} levels")
        t = type(node)
        if t is str:
            return fix(node)
        if t is dict:
            return {fix(k): walk(v, depth + 1) for k, v in node.items()}
        if t is list:
            return [walk(v, depth + 1) for v in node]
        return node

    return walk(doc, 0), count
