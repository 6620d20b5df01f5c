"""Which `cdp-chat-*` channels may be deleted: pure rules, no I/O.

Used by the channel keeper (cdp.app.channels): the cleanup's sweep of stray channels,
MAX_CHANNEL_DEL_TYPE when the guild is full, GET /api/channel/del/all/cdp. Channels are Discord channel objects (dicts with id, name,
type); creation times come from the snowflake ids.
"""

from __future__ import annotations

from collections.abc import Iterable

from cdp.domain.model import TempChannel
from cdp.domain.routing import BotEntry

TEMP_CHANNEL_PREFIX = "cdp-chat-"
# A temporary channel still marked in use after this long belongs to a request that never ended
# (crash, cancelled stream): the cleanup deletes it. Above the longest possible request (15 min).
STALE_IN_USE_SECONDS = 960
DISCORD_EPOCH_MS = 1_420_070_400_000
TEXT_CHANNEL = 0


def snowflake_time(snowflake: str | int) -> float:
    """Epoch seconds at which the Discord object with this id was created."""
    return ((int(snowflake) >> 22) + DISCORD_EPOCH_MS) / 1000.0


def is_temp_channel(channel: dict) -> bool:
    """A text channel named like the ones this proxy (and the original) creates per conversation."""
    return (int(channel.get("type", TEXT_CHANNEL)) == TEXT_CHANNEL
            and str(channel.get("name") or "").startswith(TEMP_CHANNEL_PREFIX)
            and str(channel.get("id") or "").isdigit())


def configured_channel_ids(channel_id: str, entries: Iterable[BotEntry]) -> frozenset[str]:
    """Channels the configuration names (CHANNEL_ID, bot_config channelIds): never deleted as temporary."""
    return frozenset(i for i in (channel_id, *(e.channel_id for e in entries)) if i)


def serving_request(registered: TempChannel | None, now: float, stale_after: float) -> bool:
    """The registry says a live request is using this channel (in use, and not stale)."""
    return (registered is not None and registered.delete_at is None
            and registered.created_at > now - stale_after)


def temp_channels(channels: Iterable[dict], keep_ids: Iterable[str] = ()) -> list[dict]:
    """The guild's `cdp-chat-*` channels, oldest first, never one of `keep_ids` (configured channels)."""
    keep = {str(k) for k in keep_ids if k}
    found = [c for c in channels if is_temp_channel(c) and str(c["id"]) not in keep]
    return sorted(found, key=lambda c: int(c["id"]))


def select_stray(channels: Iterable[dict], registry: dict[str, TempChannel], *, now: float,
                 min_age: float, stale_after: float, keep_ids: Iterable[str] = ()) -> list[dict]:
    """Temporary channels older than `min_age` seconds that no live request uses.

    Registered channels whose deletion is merely scheduled are left to the registry's own
    deletion (their time has not come yet); channels the registry lost (memory store after a
    restart, crashed process) are caught here once they are old enough that no request can still
    be using them.
    """
    out = []
    for c in temp_channels(channels, keep_ids):
        if snowflake_time(c["id"]) > now - min_age:
            continue
        reg = registry.get(str(c["id"]))
        if reg is not None and (reg.delete_at is not None or serving_request(reg, now, stale_after)):
            continue
        out.append(c)
    return out


def select_to_free(mode: str, channels: Iterable[dict], registry: dict[str, TempChannel], *,
                   now: float, stale_after: float, keep_ids: Iterable[str] = ()) -> list[dict]:
    """Channels to delete when the guild is full (Discord code 30013), per MAX_CHANNEL_DEL_TYPE.

    ALL = every `cdp-chat-*` channel, OLDEST = the oldest one; channels serving a live request are
    spared (deleting them would break that request). Any other mode frees nothing.
    """
    mode = (mode or "").strip().upper()
    if mode not in ("ALL", "OLDEST"):
        return []
    free = [c for c in temp_channels(channels, keep_ids)
            if not serving_request(registry.get(str(c["id"])), now, stale_after)]
    return free if mode == "ALL" else free[:1]
