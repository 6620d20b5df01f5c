"""The local scheduler of `cdp serve`: periodic jobs and daily jobs at a wall-clock time in TZ.

`Scheduler` only sleeps until the next run and calls the job; when a daily job runs is decided by
cdp.domain.schedule. On AWS, EventBridge Scheduler plays this role (see functions/).
"""

from __future__ import annotations

import asyncio
import logging
import time as _time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

from cdp.domain.schedule import next_daily

log = logging.getLogger("cdp.app.scheduler")

MAX_SLEEP = 60.0  # re-check the wall clock at least this often (suspend, clock changes)

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
