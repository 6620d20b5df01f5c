"""The local scheduler of `cdp serve`: periodic jobs and daily jobs at a wall-clock time in TZ.

`next_daily` is pure (zoneinfo, DST-safe) and unit-tested; `Scheduler` only sleeps until the next
run and calls the job. On AWS, EventBridge Scheduler plays this role (see functions/).

DST rules for a daily time:
* a time that does not exist that day (spring forward, e.g. 02:30 when clocks jump 02:00 → 03:00)
  runs at the first existing wall time after it (03:00), as cron does;
* a time that exists twice (fall back, e.g. 01:30 when clocks go 02:00 → 01:00) runs once, at
  its first occurrence.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time as _time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

log = logging.getLogger("cdp.app.scheduler")

_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")
MAX_SLEEP = 60.0  # re-check the wall clock at least this often (suspend, clock changes)


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


# -- the runner -----------------------------------------------------------------------------------
Job = Callable[[], Awaitable[object]]


@dataclass
class _Entry:
    name: str
    job: Job
    next_run: Callable[[float], float]  # epoch now -> epoch of the next run
    due: float = 0.0
    runs: int = 0
    task: asyncio.Task | None = field(default=None, repr=False)


def every(seconds: float, *, first_after: float | None = None) -> Callable[[float], float]:
    """A periodic schedule (the first run after `first_after` seconds, default one period)."""
    state = {"first": True}

    def nxt(now: float) -> float:
        if state["first"]:
            state["first"] = False
            return now + (seconds if first_after is None else first_after)
        return now + seconds

    return nxt


def daily(at: time, tz: ZoneInfo) -> Callable[[float], float]:
    def nxt(now: float) -> float:
        return next_daily(datetime.fromtimestamp(now, UTC), at, tz).timestamp()

    return nxt


class Scheduler:
    """Runs jobs at their times; a job never overlaps itself and a failure never stops the others."""

    def __init__(self, clock: Callable[[], float] = _time.time) -> None:
        self.clock = clock
        self._entries: list[_Entry] = []
        self._runner: asyncio.Task | None = None
        self._wake = asyncio.Event()

    def add(self, name: str, job: Job, schedule: Callable[[float], float]) -> None:
        entry = _Entry(name, job, schedule)
        entry.due = schedule(self.clock())
        self._entries.append(entry)
        log.info("job scheduled", extra={"job": name, "next_run": _iso(entry.due)})
        self._wake.set()

    def jobs(self) -> dict[str, float]:
        return {e.name: e.due for e in self._entries}

    def start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run(), name="cdp-scheduler")

    async def stop(self) -> None:
        tasks = [t for t in [self._runner, *(e.task for e in self._entries)] if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._runner = None

    async def _run(self) -> None:
        while True:
            now = self.clock()
            for e in self._entries:
                if e.due <= now and (e.task is None or e.task.done()):
                    e.task = asyncio.get_running_loop().create_task(self._call(e), name=f"cdp-job-{e.name}")
                    e.due = e.next_run(now)
            wait = min([e.due for e in self._entries], default=now + MAX_SLEEP) - self.clock()
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, min(wait, MAX_SLEEP)))
            except TimeoutError:
                pass

    async def _call(self, e: _Entry) -> None:
        try:
            result = await e.job()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("scheduled job failed; it runs again at its next time", extra={"job": e.name})
            return
        e.runs += 1
        level = logging.DEBUG if isinstance(result, dict) and not any(
            v for k, v in result.items() if k not in ("skipped",)) else logging.INFO
        log.log(level, "job done", extra={"job": e.name, "result": result, "next_run": _iso(e.due)})


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
