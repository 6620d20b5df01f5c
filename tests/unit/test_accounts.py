"""Account and bot health rules (cdp.domain.accounts) and the pool over the memory store."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from cdp.adapters.store.memory import MemoryHealthStore
from cdp.app.pool import AccountPool, BotHealth, NoUsableAccount
from cdp.domain.accounts import (
    Health,
    HealthRecord,
    choose_least_recently_used,
    counts,
    earliest_rest_end,
    next_reset,
    parse_reset_time,
    retry_after_seconds,
)
from cdp.domain.secrets import fingerprint


def ts(s: str, tz: str = "UTC") -> float:
    return dt.datetime.fromisoformat(s).replace(tzinfo=ZoneInfo(tz)).timestamp()


def test_next_reset_in_the_time_zone():
    assert next_reset(ts("2025-04-09 17:00"), "UTC") == ts("2025-04-10 00:00")
    assert next_reset(ts("2025-04-09 17:00", "Asia/Shanghai"), "Asia/Shanghai", "08:30") == \
        ts("2025-04-10 08:30", "Asia/Shanghai")
    assert next_reset(ts("2025-04-09 07:00", "Asia/Shanghai"), "Asia/Shanghai", "08:30") == \
        ts("2025-04-09 08:30", "Asia/Shanghai")
    assert next_reset(ts("2025-04-10 00:00"), "UTC") == ts("2025-04-11 00:00")  # strictly after
    # across a DST change: still the wall-clock reset time
    assert next_reset(ts("2025-03-08 12:00", "America/New_York"), "America/New_York") == \
        ts("2025-03-09 00:00", "America/New_York")
    assert next_reset(ts("2025-03-09 12:00", "America/New_York"), "America/New_York", "03:00") == \
        ts("2025-03-10 03:00", "America/New_York")
    with pytest.raises(ValueError):
        parse_reset_time("25h")


def test_rest_ends_by_itself_and_dead_is_final():
    r = HealthRecord("tok:1").resting(100.0, "limit")
    assert r.effective(99.0) == Health.RESTING and r.effective(100.0) == Health.HEALTHY
    d = r.dead(50.0, "401")
    assert d.effective(1e12) == Health.DEAD and d.resting_until is None
    assert d.resting(200.0, "x") is d and d.dead(60.0, "y") is d


def test_least_recently_used_among_healthy():
    recs = [HealthRecord("a", last_used=30), HealthRecord("b", last_used=10),
            HealthRecord("c", last_used=0).dead(5, "401"), HealthRecord("d", last_used=1).resting(99, "l"),
            HealthRecord("e", last_used=20)]
    assert choose_least_recently_used(recs, now=50).key == "b"
    assert choose_least_recently_used(recs, now=50, exclude={"b"}).key == "e"
    assert choose_least_recently_used(recs, now=100).key == "d"  # its rest is over
    assert choose_least_recently_used(recs[2:4], now=50) is None
    assert earliest_rest_end(recs, 50) == 99 and retry_after_seconds(recs, 50) == 49
    assert retry_after_seconds([recs[2]], 50, fallback=7) == 7
    assert counts(recs, 50) == {"healthy": 3, "resting": 1, "dead": 1}


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        self.t += 1
        return self.t


async def test_pool_rotates_fails_over_and_explains_when_empty():
    tokens = ["tok-alice-000000", "tok-bob-00000000", "tok-carol-000000"]
    fps = [fingerprint(t) for t in tokens]
    clock = Clock(ts("2025-04-09 12:00"))
    pool = AccountPool(tokens, MemoryHealthStore(), tz="UTC", reset_time="00:00", clock=clock)
    assert [(await pool.acquire())[1] for _ in range(6)] == fps + fps  # least recently used = rotation
    await pool.mark_dead(fps[0], "401 unauthorized")
    token, fp = await pool.acquire(exclude={fps[1]})
    assert fp == fps[2] and token == tokens[2]
    await pool.rest(fps[1], "daily limit")
    await pool.rest(fps[2], "daily limit")
    with pytest.raises(NoUsableAccount) as info:
        await pool.acquire()
    wait = info.value.retry_after
    assert abs(wait - (ts("2025-04-10 00:00") - clock.t)) <= 2 and "daily limit" in info.value.message
    st = await pool.status()
    assert st["by_health"] == {"healthy": 0, "resting": 2, "dead": 1}
    assert st["accounts"][0]["dead_since"] and st["accounts"][1]["resting_until"] == "2025-04-10T00:00:00+00:00"
    assert all(t not in str(st) for t in tokens)
    clock.t = ts("2025-04-10 00:00")  # the daily reset: rest over, nothing had to run
    assert (await pool.acquire())[1] in fps[1:]
    await pool.mark_dead(fps[1], "401")
    await pool.mark_dead(fps[2], "verify")
    with pytest.raises(NoUsableAccount) as info:
        await pool.acquire()
    assert "refused by Discord" in info.value.message and info.value.retry_after == 3600


async def test_bots_rest_separately():
    store = MemoryHealthStore()
    bots = BotHealth(store, tz="UTC", reset_time="00:00", clock=Clock(ts("2025-04-09 23:00")))
    await bots.rest("1300000000000000002", "limit")
    assert await bots.resting() == {"1300000000000000002"}
    assert 3500 <= await bots.rest_end_of(["1300000000000000002"]) <= 3600
    st = await bots.status(["1300000000000000001", "1300000000000000002"])
    assert [b["health"] for b in st["bots"]] == ["healthy", "resting"]
