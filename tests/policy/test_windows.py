from datetime import datetime

import pytest

from rr_addon.policy.windows import KINDS, Window, WindowCache, window_bounds, zone


def at(iso: str) -> int:
    """Epoch seconds of an ISO-8601 instant with an explicit offset."""
    return int(datetime.fromisoformat(iso).timestamp())


H = 3600
D = 86400


@pytest.mark.parametrize(
    "now, tz, kind, key, start, end",
    [
        # month ends, in UTC
        ("2026-01-31T23:59:59+00:00", None, "month", "month:2026-01", "2026-01-01T00:00:00+00:00", "2026-02-01T00:00:00+00:00"),
        ("2026-01-31T23:59:59+00:00", None, "day", "day:2026-01-31", "2026-01-31T00:00:00+00:00", "2026-02-01T00:00:00+00:00"),
        ("2026-02-01T00:00:00+00:00", None, "month", "month:2026-02", "2026-02-01T00:00:00+00:00", "2026-03-01T00:00:00+00:00"),
        ("2026-04-30T12:00:00+00:00", None, "month", "month:2026-04", "2026-04-01T00:00:00+00:00", "2026-05-01T00:00:00+00:00"),
        # leap years: 2028 and 2000 have a 29 February, 2026 and 2100 do not
        ("2028-02-29T12:00:00+00:00", None, "day", "day:2028-02-29", "2028-02-29T00:00:00+00:00", "2028-03-01T00:00:00+00:00"),
        ("2028-02-29T12:00:00+00:00", None, "month", "month:2028-02", "2028-02-01T00:00:00+00:00", "2028-03-01T00:00:00+00:00"),
        ("2026-02-28T23:59:59+00:00", None, "month", "month:2026-02", "2026-02-01T00:00:00+00:00", "2026-03-01T00:00:00+00:00"),
        ("2100-02-15T00:00:00+00:00", None, "month", "month:2100-02", "2100-02-01T00:00:00+00:00", "2100-03-01T00:00:00+00:00"),
        ("2000-02-15T00:00:00+00:00", None, "month", "month:2000-02", "2000-02-01T00:00:00+00:00", "2000-03-01T00:00:00+00:00"),
        # year end
        ("2026-12-31T23:59:59+00:00", None, "minute", "minute:2026-12-31T23:59+00:00", "2026-12-31T23:59:00+00:00", "2027-01-01T00:00:00+00:00"),
        ("2026-12-31T23:59:59+00:00", None, "hour", "hour:2026-12-31T23:00+00:00", "2026-12-31T23:00:00+00:00", "2027-01-01T00:00:00+00:00"),
        ("2026-12-31T23:59:59+00:00", None, "month", "month:2026-12", "2026-12-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00"),
        ("2027-01-01T00:00:00+00:00", None, "day", "day:2027-01-01", "2027-01-01T00:00:00+00:00", "2027-01-02T00:00:00+00:00"),
        # year end in New York: still 2026 locally while UTC is in 2027
        ("2027-01-01T04:30:00+00:00", "America/New_York", "month", "month:2026-12", "2026-12-01T00:00:00-05:00", "2027-01-01T00:00:00-05:00"),
        ("2027-01-01T04:30:00+00:00", "America/New_York", "day", "day:2026-12-31", "2026-12-31T00:00:00-05:00", "2027-01-01T00:00:00-05:00"),
        # Europe/Berlin spring forward, 2026-03-29 02:00 CET -> 03:00 CEST: a 23-hour day
        ("2026-03-29T12:00:00+02:00", "Europe/Berlin", "day", "day:2026-03-29", "2026-03-29T00:00:00+01:00", "2026-03-30T00:00:00+02:00"),
        ("2026-03-29T01:59:59+01:00", "Europe/Berlin", "hour", "hour:2026-03-29T01:00+01:00", "2026-03-29T01:00:00+01:00", "2026-03-29T03:00:00+02:00"),
        ("2026-03-29T03:00:00+02:00", "Europe/Berlin", "hour", "hour:2026-03-29T03:00+02:00", "2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00"),
        ("2026-03-15T00:00:00+01:00", "Europe/Berlin", "month", "month:2026-03", "2026-03-01T00:00:00+01:00", "2026-04-01T00:00:00+02:00"),
        # Europe/Berlin fall back, 2026-10-25 03:00 CEST -> 02:00 CET: a 25-hour day, 02:00 happens twice
        ("2026-10-25T12:00:00+01:00", "Europe/Berlin", "day", "day:2026-10-25", "2026-10-25T00:00:00+02:00", "2026-10-26T00:00:00+01:00"),
        ("2026-10-25T02:30:00+02:00", "Europe/Berlin", "hour", "hour:2026-10-25T02:00+02:00", "2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00"),
        ("2026-10-25T02:30:00+01:00", "Europe/Berlin", "hour", "hour:2026-10-25T02:00+01:00", "2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00"),
        ("2026-10-25T02:59:30+02:00", "Europe/Berlin", "minute", "minute:2026-10-25T02:59+02:00", "2026-10-25T02:59:00+02:00", "2026-10-25T02:00:00+01:00"),
        ("2026-10-25T02:59:30+01:00", "Europe/Berlin", "minute", "minute:2026-10-25T02:59+01:00", "2026-10-25T02:59:00+01:00", "2026-10-25T03:00:00+01:00"),
        ("2026-10-31T23:59:59+01:00", "Europe/Berlin", "month", "month:2026-10", "2026-10-01T00:00:00+02:00", "2026-11-01T00:00:00+01:00"),
        # America/New_York, 2026-03-08 02:00 EST -> 03:00 EDT and 2026-11-01 02:00 EDT -> 01:00 EST
        ("2026-03-08T12:00:00-04:00", "America/New_York", "day", "day:2026-03-08", "2026-03-08T00:00:00-05:00", "2026-03-09T00:00:00-04:00"),
        ("2026-03-08T01:59:59-05:00", "America/New_York", "hour", "hour:2026-03-08T01:00-05:00", "2026-03-08T01:00:00-05:00", "2026-03-08T03:00:00-04:00"),
        ("2026-11-01T12:00:00-05:00", "America/New_York", "day", "day:2026-11-01", "2026-11-01T00:00:00-04:00", "2026-11-02T00:00:00-05:00"),
        ("2026-11-01T01:30:00-04:00", "America/New_York", "hour", "hour:2026-11-01T01:00-04:00", "2026-11-01T01:00:00-04:00", "2026-11-01T01:00:00-05:00"),
        ("2026-11-01T01:30:00-05:00", "America/New_York", "hour", "hour:2026-11-01T01:00-05:00", "2026-11-01T01:00:00-05:00", "2026-11-01T02:00:00-05:00"),
        # offsets that are not whole hours; Lord Howe moves its clocks by 30 minutes (02:00 -> 02:30)
        ("2026-06-01T07:20:00+05:45", "Asia/Kathmandu", "hour", "hour:2026-06-01T07:00+05:45", "2026-06-01T07:00:00+05:45", "2026-06-01T08:00:00+05:45"),
        ("2026-10-04T02:45:00+11:00", "Australia/Lord_Howe", "hour", "hour:2026-10-04T02:00+11:00", "2026-10-04T02:30:00+11:00", "2026-10-04T03:00:00+11:00"),
        ("2026-10-04T01:45:00+10:30", "Australia/Lord_Howe", "hour", "hour:2026-10-04T01:00+10:30", "2026-10-04T01:00:00+10:30", "2026-10-04T02:30:00+11:00"),
        # a skipped midnight (America/Santiago starts DST at 00:00): the day begins at 01:00
        ("2026-09-06T12:00:00-03:00", "America/Santiago", "day", "day:2026-09-06", "2026-09-06T01:00:00-03:00", "2026-09-07T00:00:00-03:00"),
    ],
    ids=lambda v: str(v) if v is not None else "UTC",
)
def test_window_bounds(now, tz, kind, key, start, end):
    assert window_bounds(kind, at(now), tz) == Window(kind, at(start), at(end), key)


@pytest.mark.parametrize(
    "tz, month, seconds",
    [
        (None, "2026-02-10T00:00:00+00:00", 28 * D),
        (None, "2028-02-10T00:00:00+00:00", 29 * D),
        ("Europe/Berlin", "2026-03-10T00:00:00+01:00", 31 * D - H),
        ("Europe/Berlin", "2026-10-10T00:00:00+02:00", 31 * D + H),
        ("America/New_York", "2026-11-10T00:00:00-05:00", 30 * D + H),
    ],
)
def test_month_lengths(tz, month, seconds):
    assert window_bounds("month", at(month), tz).seconds == seconds


def test_float_clock_and_window_end_is_exclusive():
    t = at("2026-11-28T14:05:00+00:00")
    assert window_bounds("minute", t + 59.999, None).key == "minute:2026-11-28T14:05+00:00"
    assert window_bounds("minute", t + 60, None).key == "minute:2026-11-28T14:06+00:00"


@pytest.mark.parametrize(
    "left, expected",
    [(30.0, 30), (30.2, 31), (0.2, 1), (0.0, 1), (-5, 1), (86400, 86400)],
)
def test_resets_in_is_whole_seconds_at_least_one(left, expected):
    w = Window("minute", 0, 1_000_000, "k")
    assert w.resets_in(1_000_000 - left) == expected


# Windows partition time: consecutive, no gaps, no overlaps, one key each.
ZONES = [
    None,
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "America/Santiago",
    "America/Havana",
    "Pacific/Chatham",
]


@pytest.mark.parametrize("tz", ZONES, ids=lambda z: z or "UTC")
@pytest.mark.parametrize("kind, begin, count", [("hour", "2026-01-01", 8800), ("day", "2026-01-01", 400), ("month", "2025-12-01", 30)])
def test_windows_partition_time(tz, kind, begin, count):
    t = at(begin + "T00:00:00+00:00")
    w = window_bounds(kind, t, tz)
    assert w.start <= t < w.end
    keys = set()
    for _ in range(count):
        assert window_bounds(kind, w.start, tz) == w
        assert window_bounds(kind, w.end - 1, tz) == w
        assert w.key not in keys
        keys.add(w.key)
        nxt = window_bounds(kind, w.end, tz)
        assert nxt.start == w.end
        w = nxt


@pytest.mark.parametrize("tz, around", [("Europe/Berlin", "2026-10-25T00:00:00+00:00"), ("Australia/Lord_Howe", "2026-10-03T14:00:00+00:00")])
def test_minutes_partition_across_a_dst_change(tz, around):
    w = window_bounds("minute", at(around), tz)
    for _ in range(240):
        nxt = window_bounds("minute", w.end, tz)
        assert nxt.start == w.end and nxt.key != w.key and 0 < w.seconds <= 60
        w = nxt


def test_unknown_kind_and_zone():
    with pytest.raises(ValueError, match="unknown window 'week'"):
        window_bounds("week", 0, None)
    with pytest.raises(ValueError, match="unknown timezone 'Mars/Olympus'"):
        zone("Mars/Olympus")
    with pytest.raises(ValueError, match="unknown timezone"):
        zone("../../etc/passwd")


def test_window_cache_recomputes_only_when_the_window_ends():
    cache = WindowCache("Europe/Berlin")
    t = at("2026-10-25T02:59:59+02:00")
    first = cache.get("hour", t)
    assert cache.get("hour", t - 100) is first
    second = cache.get("hour", t + 1)
    assert second.key == "hour:2026-10-25T02:00+01:00"
    assert cache.get("hour", t) == first  # a clock stepping back still gets the right window
    assert [cache.get(k, t).kind for k in KINDS] == list(KINDS)
