"""Daily times in a time zone: pure date rules (zoneinfo, DST-safe), no I/O.

Used by the settings (KEEPALIVE_TIME, TZ) and by `cdp serve`'s scheduler (cdp.app.scheduler).

DST rules for a daily time:
* a time that does not exist that day (spring forward, e.g. 02:30 when clocks jump 02:00 → 03:00)
  runs at the first existing wall time after it (03:00), as cron does;
* a time that exists twice (fall back, e.g. 01:30 when clocks go 02:00 → 01:00) runs once, at
  its first occurrence.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")


def parse_time_of_day(value: str) -> time:
    """"09:10" or "09:10:30" → time. Raises ValueError with a clear message."""
    m = _HHMM.match((value or "").strip())
    if not m:
        raise ValueError(f"must be a time of day HH:MM (24 h), such as 09:10; got {value!r}")
    return time(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))


def zone(name: str) -> ZoneInfo:
    """The IANA zone `name` ("Asia/Shanghai", "UTC"). Raises ValueError if unknown."""
    try:
        return ZoneInfo((name or "UTC").strip() or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}; use an IANA name such as Asia/Shanghai or UTC") from None


def _exists(wall: datetime, tz: ZoneInfo) -> bool:
    """Whether the naive wall time `wall` happens in `tz` (not skipped by a DST jump)."""
    aware = wall.replace(tzinfo=tz)
    return aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall


def _resolve(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The instant (UTC) of wall time `at` on `day` in `tz`, per the DST rules above."""
    wall = datetime.combine(day, at)
    step = timedelta(minutes=1)
    for _ in range(48 * 60):  # a gap is at most a day (Pacific/Apia skipped 2011-12-30)
        if _exists(wall, tz):
            break
        wall = (wall + step).replace(second=0, microsecond=0)
    return wall.replace(tzinfo=tz, fold=0).astimezone(UTC)  # fold=0: first of two occurrences


def next_daily(now: datetime, at: time, tz: ZoneInfo) -> datetime:
    """The first run of a daily job at wall time `at` in `tz` strictly after `now` (aware), in UTC."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now_utc = now.astimezone(UTC)
    day = now_utc.astimezone(tz).date() - timedelta(days=1)  # yesterday's run may still be ahead (gaps)
    for _ in range(4):
        candidate = _resolve(day, at, tz)
        if candidate > now_utc:
            return candidate
        day += timedelta(days=1)
    raise AssertionError("unreachable: a daily time happens at least every other day")


def previous_daily(now: datetime, at: time, tz: ZoneInfo) -> datetime:
    """The last run of the daily job at or before `now` (e.g. the last daily reset), in UTC."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now_utc = now.astimezone(UTC)
    day = now_utc.astimezone(tz).date() + timedelta(days=1)
    for _ in range(4):
        candidate = _resolve(day, at, tz)
        if candidate <= now_utc:
            return candidate
        day -= timedelta(days=1)
    raise AssertionError("unreachable: a daily time happens at least every other day")
