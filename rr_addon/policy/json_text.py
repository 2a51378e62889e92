"""Where the string literals of a JSON text are, found from positions inside it.

The redactor scans a JSON body as raw bytes (`Redactor.redact_json_text`) and
needs, for the positions of its matches only, which string literal holds each
one and whether that literal is an object key. Tokenising the whole text in
Python would cost more than the scan, so this works from native byte searches
between consecutive positions: a position is inside a literal when an odd
number of unescaped quotes precede it (`bytes.count` since the previous
position, minus the escaped quotes), and the literal runs from the unescaped
quote before it (`rfind`) to the one after it (`find`). Escaped quotes are
found once, by one regex pass over the escape sequences, only when the text
has a backslash at all.

The text must be valid JSON (`core.bodies.parse_json` accepts it, or
`dump_json` wrote it): outside strings a valid text has no quote and no
backslash, which is what makes counting sound.

`value_spans` is the same placement for a text without any backslash (what
`dump_json` writes unless a string holds a quote, a backslash or a control
character), fused into one loop over the matches: there every quote is a
literal's end, and consecutive matches in one literal share its placement.
"""

from __future__ import annotations

import bisect
import re
from typing import Iterable

_ESCAPE = re.compile(rb"\\.", re.S)  # leftmost-first: "\\\\" is one escape, the quote after it is not escaped
_WS = b" \t\r\n"


class JsonStrings:
    """String literals of one JSON text, numbered as `locate_all` meets them."""

    __slots__ = ("data", "escapes", "escaped_quotes", "starts", "ends", "keys", "_index")

    def __init__(self, data: bytes):
        self.data = data
        if b"\\" in data:
            self.escapes = [m.start() for m in _ESCAPE.finditer(data)]
            self.escaped_quotes = [i + 1 for i in self.escapes if data[i + 1] == 0x22]
        else:
            self.escapes = []
            self.escaped_quotes = []
        self.starts: list[int] = []  # first byte of each literal's content (after its opening quote)
        self.ends: list[int] = []  # its closing quote
        self.keys: list[bool] = []  # whether the literal is an object key
        self._index: dict[int, int] = {}  # opening quote -> literal number

    def locate_all(self, positions: Iterable[int]) -> list[int]:
        """For each of ascending positions (never a quote): the number of the
        literal holding it, or -1 outside strings."""
        data, n = self.data, len(self.data)
        count, rfind, find = data.count, data.rfind, data.find
        escaped = self.escaped_quotes
        skip = frozenset(escaped)
        index, starts, ends, keys = self._index, self.starts, self.ends, self.keys
        out: list[int] = []
        add = out.append
        pos = quotes = 0
        for p in positions:
            quotes += count(b'"', pos, p)
            pos = p
            if escaped:
                if not (quotes - bisect.bisect_left(escaped, p)) & 1:
                    add(-1)
                    continue
                q = rfind(b'"', 0, p)
                while q in skip:
                    q = rfind(b'"', 0, q)
            elif quotes & 1:
                q = rfind(b'"', 0, p)
            else:
                add(-1)
                continue
            k = index.get(q)
            if k is None:
                end = find(b'"', p)
                while end in skip:
                    end = find(b'"', end + 1)
                after = end + 1
                while after < n and data[after] in _WS:
                    after += 1
                k = index[q] = len(starts)
                starts.append(q + 1)
                ends.append(end)
                keys.append(after < n and data[after] == 0x3A)  # ':'
            add(k)
        return out

    def with_escapes(self) -> list[int]:
        """Numbers of every literal holding an escape sequence."""
        found: list[int] = []
        escapes = self.escapes
        i = 0
        while i < len(escapes):
            k = self.locate_all((escapes[i],))[0]
            found.append(k)  # an escape is always inside a literal in valid JSON
            i = bisect.bisect_right(escapes, self.ends[k], i)  # the next literal's escapes
        return found


def value_spans(data: bytes, matches: list[tuple[int, int, int, int]]) -> tuple[list[tuple[int, int, int, int]], list[int], list[int]]:
    """For a valid JSON text without a backslash and its `matches` as
    (start, -end, detector, _) sorted by start: the matches inside string values
    (keys and everything outside strings dropped) as (start, -end, detector,
    literal), and the literals' `starts` and `ends` (as in `JsonStrings`),
    numbered in order of position."""
    n = len(data)
    count, rfind, find = data.count, data.rfind, data.find
    spans: list[tuple[int, int, int, int]] = []
    add = spans.append
    starts: list[int] = []
    ends: list[int] = []
    pos = quotes = 0
    end = -1  # the closing quote of the literal the previous match was placed in
    k = -1  # its number, or -1 if it is a key
    for s, neg_e, i, _ in matches:
        if s < end:  # the same literal as the previous match (no quote in between)
            if k >= 0:
                add((s, neg_e, i, k))
            continue
        quotes += count(b'"', pos, s)
        pos = s
        if not quotes & 1:  # outside strings
            end = -1
            continue
        end = find(b'"', s)
        after = end + 1
        while after < n and data[after] in _WS:
            after += 1
        if after < n and data[after] == 0x3A:  # ':' - a key
            k = -1
            continue
        k = len(starts)
        starts.append(rfind(b'"', 0, s) + 1)
        ends.append(end)
        add((s, neg_e, i, k))
    return spans, starts, ends

