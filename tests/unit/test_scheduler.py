"""Next-run computation of the daily jobs (cdp.domain.schedule, run by cdp.app.scheduler): wall time in TZ, across DST changes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from cdp.app.scheduler import Scheduler, every
from cdp.domain.schedule import next_daily, parse_time_of_day, previous_daily, zone
from hypothesis import given, settings
from hypothesis import strategies as st

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
SHANGHAI = ZoneInfo("Asia/Shanghai")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")  # 30-minute DST shift
APIA = ZoneInfo("Pacific/Apia")  # skipped 2011-12-30 entirely


def utc(*a) -> datetime:
    return datetime(*a, tzinfo=UTC)


def local(tz, *a, fold=0) -> datetime:
    return datetime(*a, tzinfo=tz, fold=fold)


def test_parse_time_of_day():
    assert parse_time_of_day("09:10") == time(9, 10)
    assert parse_time_of_day(" 9:05 ") == time(9, 5)
    assert parse_time_of_day("23:59:30") == time(23, 59, 30)
    for bad in ("24:00", "9", "09:60", "nine", "", "09:10pm"):
        with pytest.raises(ValueError, match="HH:MM"):
            parse_time_of_day(bad)


def test_zone_errors_are_clear():
    assert zone("") == ZoneInfo("UTC")
    with pytest.raises(ValueError, match="IANA"):
        zone("Mars/Olympus")


def test_same_day_when_time_is_ahead_and_next_day_when_passed():
    at = time(9, 10)
    assert next_daily(local(SHANGHAI, 2024, 5, 1, 8, 0), at, SHANGHAI) == local(SHANGHAI, 2024, 5, 1, 9, 10)
    assert next_daily(local(SHANGHAI, 2024, 5, 1, 9, 10), at, SHANGHAI) == local(SHANGHAI, 2024, 5, 2, 9, 10)
    assert next_daily(local(SHANGHAI, 2024, 5, 1, 9, 11), at, SHANGHAI) == local(SHANGHAI, 2024, 5, 2, 9, 10)
    # 09:10 in Shanghai is 01:10 UTC; the result is in UTC
    assert next_daily(utc(2024, 5, 1, 1, 9), at, SHANGHAI) == utc(2024, 5, 1, 1, 10)
    assert next_daily(utc(2024, 5, 1, 1, 9), at, SHANGHAI).tzinfo == UTC


def test_naive_now_is_refused():
    with pytest.raises(ValueError):
        next_daily(datetime(2024, 1, 1), time(9), UTC)


def test_keeps_wall_time_across_spring_forward():
    # US 2024-03-10: 02:00 EST -> 03:00 EDT. 09:10 stays 09:10 local; the UTC instant moves an hour.
    before = next_daily(local(NY, 2024, 3, 9, 8, 0), time(9, 10), NY)
    after = next_daily(before, time(9, 10), NY)
    assert before == utc(2024, 3, 9, 14, 10)  # 09:10 EST
    assert after == utc(2024, 3, 10, 13, 10)  # 09:10 EDT
    assert after - before == timedelta(hours=23)


def test_keeps_wall_time_across_fall_back():
    # Europe 2024-10-27: 03:00 CEST -> 02:00 CET. The day has 25 hours.
    first = next_daily(local(BERLIN, 2024, 10, 26, 8, 0), time(9, 10), BERLIN)
    second = next_daily(first, time(9, 10), BERLIN)
    assert first.astimezone(BERLIN).hour == 9 and second.astimezone(BERLIN).hour == 9
    assert second - first == timedelta(hours=25)


def test_time_in_spring_gap_runs_when_the_gap_ends():
    # 02:30 does not exist in New York on 2024-03-10: the job runs at 03:00 EDT, once.
    run = next_daily(local(NY, 2024, 3, 10, 0, 0), time(2, 30), NY)
    assert run == local(NY, 2024, 3, 10, 3, 0)
    assert run == utc(2024, 3, 10, 7, 0)
    nxt = next_daily(run, time(2, 30), NY)
    assert nxt == local(NY, 2024, 3, 11, 2, 30)


def test_time_in_half_hour_gap():
    # Lord Howe 2024-10-06: 02:00 -> 02:30. 02:10 does not exist: run at 02:30.
    run = next_daily(local(LORD_HOWE, 2024, 10, 6, 0, 0), time(2, 10), LORD_HOWE)
    assert run.astimezone(LORD_HOWE).replace(tzinfo=None) == datetime(2024, 10, 6, 2, 30)


def test_ambiguous_time_runs_once_at_first_occurrence():
    # New York 2024-11-03: 01:30 happens twice (EDT then EST). Run at the first, and not again.
    first = next_daily(local(NY, 2024, 11, 3, 0, 0), time(1, 30), NY)
    assert first == utc(2024, 11, 3, 5, 30)  # 01:30 EDT
    between = local(NY, 2024, 11, 3, 1, 45, fold=1)  # during the second 01:xx hour
    assert between.astimezone(UTC) > first
    assert next_daily(first, time(1, 30), NY) == local(NY, 2024, 11, 4, 1, 30)
    assert next_daily(between, time(1, 30), NY) == local(NY, 2024, 11, 4, 1, 30)


def test_skipped_day():
    # Samoa jumped from 2011-12-29 23:59:59 to 2011-12-31 00:00: the 12:00 run of the 30th moves on.
    run = next_daily(local(APIA, 2011, 12, 29, 13, 0), time(12, 0), APIA)
    assert run.astimezone(APIA).replace(tzinfo=None) == datetime(2011, 12, 31, 0, 0)
    assert next_daily(run, time(12, 0), APIA).astimezone(APIA).replace(tzinfo=None) == \
        datetime(2011, 12, 31, 12, 0)


def test_previous_daily():
    at = time(0, 0)
    assert previous_daily(local(SHANGHAI, 2024, 5, 1, 8, 0), at, SHANGHAI) == local(SHANGHAI, 2024, 5, 1, 0, 0)
    assert previous_daily(local(SHANGHAI, 2024, 5, 1, 0, 0), at, SHANGHAI) == local(SHANGHAI, 2024, 5, 1, 0, 0)


ZONES = [UTC, NY, BERLIN, SHANGHAI, LORD_HOWE, ZoneInfo("America/Sao_Paulo"), ZoneInfo("Asia/Kolkata")]


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2037, 12, 31)),
       st.sampled_from(ZONES), st.times().map(lambda t: t.replace(microsecond=0)))
def test_properties(naive_now, tz, at):
    now = naive_now.replace(tzinfo=UTC)
    run = next_daily(now, at, tz)
    assert run > now
    assert run - now <= timedelta(days=1, hours=2)  # never skips a day
    wall = run.astimezone(tz)
    # on time, or moved forward out of a DST gap by at most the gap (≤ 1 h in these zones)
    delta = datetime.combine(wall.date(), wall.time()) - datetime.combine(wall.date(), at)
    assert timedelta(0) <= delta <= timedelta(hours=1)
    # nothing in between: the run before this one is at or before now
    assert previous_daily(run - timedelta(microseconds=1), at, tz) <= now


async def test_scheduler_runs_jobs_and_survives_failures():
    calls = {"ok": 0, "bad": 0}

    async def ok():
        calls["ok"] += 1
        return {"deleted": 0}

    async def bad():
        calls["bad"] += 1
        raise RuntimeError("boom")

    s = Scheduler()
    s.add("ok", ok, every(0.05, first_after=0))
    s.add("bad", bad, every(0.05, first_after=0))
    s.start()
    await asyncio.sleep(0.4)
    await s.stop()
    assert calls["ok"] >= 3 and calls["bad"] >= 3


async def test_scheduler_never_overlaps_a_slow_job():
    running = {"now": 0, "max": 0}

    async def slow():
        running["now"] += 1
        running["max"] = max(running["max"], running["now"])
        await asyncio.sleep(0.15)
        running["now"] -= 1

    s = Scheduler()
    s.add("slow", slow, every(0.01, first_after=0))
    s.start()
    await asyncio.sleep(0.4)
    await s.stop()
    assert running["max"] == 1
