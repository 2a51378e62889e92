"""RE2 patterns in the configuration: checked when it loads, with RE2's reason."""

from __future__ import annotations

import re

import re2


def re2_options() -> re2.Options:
    """The options every rule regex is compiled with (errors are reported, not logged)."""
    options = re2.Options()
    options.log_errors = False
    return options


_OPTIONS = re2_options()

_LOOK_AROUND = ("invalid perl operator: (?=", "invalid perl operator: (?!", "invalid perl operator: (?<")
_BACK_REFERENCE = re.compile(r"invalid escape sequence: \\(?:[1-9]|k)")


def check_re2(pattern: str) -> str:
    """Return `pattern` if RE2 compiles it; else ValueError with RE2's reason."""
    if not pattern:
        raise ValueError("an empty pattern matches everything; omit the field instead")
    try:
        re2.compile(pattern, _OPTIONS)
    except re2.error as e:
        raw = e.args[0] if e.args else b""
        detail = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        hint = ""
        if detail.startswith(_LOOK_AROUND):
            hint = " (RE2 has no look-around)"
        elif _BACK_REFERENCE.match(detail):
            hint = " (RE2 has no back-references)"
        raise ValueError(f"not a valid RE2 regex: {detail}{hint}") from None
    return pattern
