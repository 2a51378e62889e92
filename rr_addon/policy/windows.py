"""Calendar windows for meters: minute, hour, day, month. Pure; the clock is passed in.

A window is the set of instants that share one local calendar period in a
timezone (UTC by default): a day is a local date, so it lasts 23 or 25 hours
on a DST change; a month is the real calendar month. Hours and minutes are
also told apart by the UTC offset, so the hour a DST change repeats is two
windows of one hour each, never one of two hours.

`Window.key` is a stable id of the period, used in counter keys:
  month:2026-11   day:2026-11-28   hour:2026-11-28T14:00+01:00   minute:2026-11-28T14:05+01:00
Day and month keys carry no timezone (the meter that owns the counter does).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo

KINDS = ("minute", "hour", "day", "month")
UTC = timezone.utc


@dataclass(frozen=True, slots=True)
class Window:
    kind: str
    start: int  # epoch seconds, inclusive
    end: int  # epoch seconds, exclusive: the counter resets here
    key: str

    @property
    def seconds(self) -> int:
        return self.end - self.start

    def resets_in(self, now: float) -> int:
        """Whole seconds until the window ends, at least 1 (a Retry-After value)."""
        left = self.end - now
        whole = int(left)
        return max(1, whole + (whole < left))


@lru_cache(maxsize=64)
def zone(name: str | None) -> tzinfo:
    """The tzinfo for an IANA name (None or "UTC": UTC). Raises ValueError if unknown."""
    if name is None or name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(f"unknown timezone {name!r}: use an IANA name such as 'Europe/Berlin'") from None


def window_bounds(kind: str, now: float, tz: tzinfo | str | None = None) -> Window:
    """The window of `kind` that contains the instant `now` (epoch seconds)."""
    if not isinstance(tz, tzinfo):
        tz = zone(tz)
    t = int(now // 1)  # whole seconds; windows never start inside a second
    if kind == "minute" or kind == "hour":
        return _clock_window(kind, t, tz)
    if kind == "day" or kind == "month":
        return _calendar_window(kind, t, tz)
    raise ValueError(f"unknown window {kind!r}: one of {', '.join(KINDS)}")


def _offset(t: int, tz: tzinfo) -> int:
    return int(datetime.fromtimestamp(t, tz).utcoffset().total_seconds())  # type: ignore[union-attr]


def _clock_window(kind: str, t: int, tz: tzinfo) -> Window:
    # Floor the local wall clock under the current offset; an offset change inside
    # that span (zones that shift by 30 minutes, e.g. Australia/Lord_Howe) cuts it.
    period = 60 if kind == "minute" else 3600
    off = _offset(t, tz)
    start = t - (t + off) % period
    end = start + period
    if _offset(start, tz) != off:
        start = _transition(start, t, tz)
    if _offset(end - 1, tz) != off:
        end = _transition(t, end - 1, tz)
    local = datetime.fromtimestamp(t, tz)
    label = local.strftime("%Y-%m-%dT%H:%M") if kind == "minute" else local.strftime("%Y-%m-%dT%H:00")
    return Window(kind, start, end, f"{kind}:{label}{_fmt_offset(off)}")


def _transition(lo: int, hi: int, tz: tzinfo) -> int:
    """First second in (lo, hi] whose offset differs from lo's (offsets differ at lo and hi)."""
    base = _offset(lo, tz)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset(mid, tz) == base:
            lo = mid
        else:
            hi = mid
    return hi


def _calendar_window(kind: str, t: int, tz: tzinfo) -> Window:
    local = datetime.fromtimestamp(t, tz)
    if kind == "day":
        first = local.date()
        after = first + timedelta(days=1)
        label = first.isoformat()
    else:
        first = local.date().replace(day=1)
        after = (first + timedelta(days=32)).replace(day=1)
        label = first.strftime("%Y-%m")
    return Window(kind, _local_midnight(first, tz), _local_midnight(after, tz), f"{kind}:{label}")


def _local_midnight(day, tz: tzinfo) -> int:
    # fold=0 resolves a repeated midnight to its first occurrence and a skipped
    # one (DST at 00:00, e.g. America/Santiago) to the instant the day begins.
    return int(datetime(day.year, day.month, day.day, tzinfo=tz).timestamp())


def _fmt_offset(seconds: int) -> str:
    sign = "+" if seconds >= 0 else "-"
    h, m = divmod(abs(seconds) // 60, 60)
    return f"{sign}{h:02d}:{m:02d}"


class WindowCache:
    """The current window per kind for one timezone, recomputed only when `now`
    leaves it: the request path pays a comparison, not a zoneinfo lookup."""

    __slots__ = ("tz", "_current")

    def __init__(self, tz: tzinfo | str | None = None) -> None:
        self.tz = tz if isinstance(tz, tzinfo) else zone(tz)
        self._current: dict[str, Window] = {}

    def get(self, kind: str, now: float) -> Window:
        w = self._current.get(kind)
        if w is None or not (w.start <= now < w.end):
            w = self._current[kind] = window_bounds(kind, now, self.tz)
        return w
