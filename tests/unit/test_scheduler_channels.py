"""Which temporary channels the housekeeping deletes (cdp.domain.housekeeping): pure rules."""

from __future__ import annotations

from cdp.domain.housekeeping import (
    DISCORD_EPOCH_MS,
    is_temp_channel,
    select_stray,
    select_to_free,
    snowflake_time,
)
from cdp.domain.model import TempChannel

NOW = 1_720_000_000.0
HOUR = 3600.0


def sf(epoch: float, n: int = 0) -> str:
    return str((int(epoch * 1000) - DISCORD_EPOCH_MS) << 22 | n)


def ch(name: str, age: float, n: int = 0, type: int = 0) -> dict:
    return {"id": sf(NOW - age, n), "name": name, "type": type}


def test_snowflake_time():
    assert snowflake_time("175928847299117063") == 1462015105.796
    assert abs(snowflake_time(sf(NOW)) - NOW) < 0.001


def test_is_temp_channel():
    assert is_temp_channel(ch("cdp-chat-abc", 0))
    assert not is_temp_channel(ch("general", 0))
    assert not is_temp_channel(ch("cdp-chat-cat", 0, type=4))  # a category is never ours
    assert not is_temp_channel(ch("cdp-对话abc", 0))  # the original's older names stay untouched


def test_select_stray():
    old, young = ch("cdp-chat-old", 2 * HOUR, 1), ch("cdp-chat-young", 60, 2)
    busy, scheduled = ch("cdp-chat-busy", 2 * HOUR, 3), ch("cdp-chat-later", 2 * HOUR, 4)
    stale = ch("cdp-chat-stale", 2 * HOUR, 5)
    configured, other = ch("cdp-chat-configured", 2 * HOUR, 6), ch("general", 2 * HOUR, 7)
    registry = {
        busy["id"]: TempChannel(busy["id"], "g", NOW - 60),  # a live request
        scheduled["id"]: TempChannel(scheduled["id"], "g", NOW - 2 * HOUR, NOW + 600),
        stale["id"]: TempChannel(stale["id"], "g", NOW - 2 * HOUR),  # in use for 2 h: crashed
    }
    got = select_stray([young, busy, scheduled, stale, configured, other, old], registry, now=NOW,
                       min_age=HOUR, stale_after=960, keep_ids=[configured["id"]])
    assert [c["name"] for c in got] == ["cdp-chat-old", "cdp-chat-stale"]


def test_select_to_free():
    a, b, c = ch("cdp-chat-a", 300, 1), ch("cdp-chat-b", 200, 2), ch("cdp-chat-c", 100, 3)
    registry = {a["id"]: TempChannel(a["id"], "g", NOW - 300)}  # a serves a live request
    chans = [c, ch("general", 999), b, a]
    assert [x["name"] for x in select_to_free("ALL", chans, registry, now=NOW, stale_after=960)] == \
        ["cdp-chat-b", "cdp-chat-c"]
    assert [x["name"] for x in select_to_free("oldest", chans, registry, now=NOW, stale_after=960)] == \
        ["cdp-chat-b"]
    assert select_to_free("", chans, registry, now=NOW, stale_after=960) == []
    assert select_to_free("OLDEST", chans, registry, now=NOW, stale_after=960,
                          keep_ids=[b["id"], c["id"]]) == []
