"""Field-by-field differences between two stored object specs, for the plan
`rr apply` prints: a reviewer must see `meters[requests].limits.minute: 30 → 20`,
not just "meters changed". Pure: dicts in, `FieldChange`s out.

Lists whose entries all carry a `name` (rules, meters, credentials) are
compared entry by entry under that name; other lists (hosts, filters,
detectors) are compared whole, because their entries have no identity.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

ABSENT = object()  # a field present on one side only
WIDTH = 60  # values longer than this are shown as a compact diff
CONTEXT = 12  # characters kept around the part that differs
# Fields that hold a secret reference: never shown, whatever a spec holds; stored encrypted, never in a spec.
SECRET_FIELDS = frozenset({"secret", "client_secret", "client_key", "refresh_token", "private_key", "service_account"})


@dataclass(frozen=True)
class FieldChange:
    path: str  # e.g. "meters[requests].limits.minute"
    old: Any = ABSENT
    new: Any = ABSENT
    note: str = ""  # said instead of the values (secrets)

    def __str__(self) -> str:
        if self.note:
            return f"{self.path}: {self.note}"
        if self.old is ABSENT:
            return f"{self.path}: added {_clip(render(self.new))}"
        if self.new is ABSENT:
            return f"{self.path}: removed (was {_clip(render(self.old))})"
        old, new = compact_pair(render(self.old), render(self.new))
        return f"{self.path}: {old} → {new}"


def render(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)


def _clip(text: str) -> str:
    return text if len(text) <= WIDTH else text[: WIDTH - 1] + f"… (+{len(text) - WIDTH + 1} chars)"


def compact_pair(old: str, new: str) -> tuple[str, str]:
    """Both values, or for long ones only the part that differs with a little context."""
    if len(old) <= WIDTH and len(new) <= WIDTH:
        return old, new
    prefix = 0
    while prefix < min(len(old), len(new)) and old[prefix] == new[prefix]:
        prefix += 1
    suffix = 0
    while suffix < min(len(old), len(new)) - prefix and old[-1 - suffix] == new[-1 - suffix]:
        suffix += 1

    def window(text: str) -> str:
        start = max(0, prefix - CONTEXT)
        end = min(len(text), len(text) - suffix + CONTEXT)
        middle = text[prefix : len(text) - suffix]
        if len(middle) > WIDTH:
            middle = middle[: WIDTH - 1] + f"… (+{len(middle) - WIDTH + 1} chars)"
        return ("…" if start else "") + text[start:prefix] + middle + text[len(text) - suffix : end] + ("…" if end < len(text) else "")

    return window(old), window(new)


def _named(items: list) -> dict[str, Any] | None:
    """The entries keyed by name when every entry has a distinct string `name`."""
    if not all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items):
        return None
    keyed = {i["name"]: i for i in items}
    return keyed if len(keyed) == len(items) else None


def diff(old: Any, new: Any, path: str = "") -> list[FieldChange]:
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[FieldChange] = []
        for key in list(old) + [k for k in new if k not in old]:
            sub = f"{path}.{key}" if path else str(key)
            if key in SECRET_FIELDS and old.get(key, ABSENT) != new.get(key, ABSENT):
                out.append(FieldChange(sub, note="changed (value not shown)"))
            elif key not in new:
                out.append(FieldChange(sub, old[key], ABSENT))
            elif key not in old:
                out.append(FieldChange(sub, ABSENT, new[key]))
            else:
                out.extend(diff(old[key], new[key], sub))
        return out
    if isinstance(old, list) and isinstance(new, list) and (old or new):
        a, b = _named(old), _named(new)
        if a is not None and b is not None:
            out = []
            for name in list(a) + [n for n in b if n not in a]:
                sub = f"{path}[{name}]"
                if name not in b:
                    out.append(FieldChange(sub, a[name], ABSENT))
                elif name not in a:
                    out.append(FieldChange(sub, ABSENT, b[name]))
                else:
                    out.extend(diff(a[name], b[name], sub))
            common = [n for n in a if n in b]
            if not out and common != [n for n in b if n in a]:
                out.append(FieldChange(f"{path} (order)", list(a), list(b)))
            return out
    return [FieldChange(path or "(value)", old, new)]
