"""Scheduled jobs, called by the Lambdas (functions/cleanup, functions/keepalive), by `cdp serve`'s
own scheduler (cdp/scheduler.py) and by `cdp cleanup` / `cdp keepalive`. Each takes the objects
built by cdp.entry.bootstrap and returns a summary dict.

Also the channel housekeeping shared with the service (MAX_CHANNEL_DEL_TYPE) and the /api routes
(GET /api/channel/del/all/cdp); which channels qualify is decided by cdp.domain.housekeeping.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from cdp.domain.housekeeping import TEMP_CHANNEL_PREFIX, select_stray, select_to_free, temp_channels
from cdp.domain.model import TempChannel
from cdp.settings import SettingsError

log = logging.getLogger("cdp.app.jobs")

KEEPALIVE_TEXT = "keepalive"
KEEPALIVE_CHANNEL_GRACE = 5.0  # seconds the Coze bot gets to see a keepalive in a temporary channel


# -- configuration helpers ------------------------------------------------------------------------
def _bot_entries(settings) -> list:
    """bot_config.json entries (cdp.adapters.botconfig), [] when there is no file or no such module."""
    try:
        from cdp.adapters.botconfig import load_bot_config
    except ImportError:
        return []
    return list(load_bot_config(settings))


def configured_channel_ids(settings) -> set[str]:
    """Channels the configuration names (CHANNEL_ID, bot_config channelIds): never deleted as temporary."""
    ids = {settings.CHANNEL_ID} if settings.CHANNEL_ID else set()
    try:
        ids |= {e.channel_id for e in _bot_entries(settings) if getattr(e, "channel_id", None)}
    except (SettingsError, OSError):  # a broken file is reported at start-up; housekeeping goes on
        log.warning("could not read the bot config; only CHANNEL_ID is protected from deletion")
    return ids


def keepalive_targets(settings) -> list[tuple[str, str | None]]:
    """(Coze bot id, channel id or None) pairs: every COZE_BOT_ID in CHANNEL_ID, and every
    bot_config entry in its channelId, without duplicates (as the original's daily task)."""
    out: list[tuple[str, str | None]] = []
    for bot in settings.coze_bot_ids:
        out.append((bot, settings.CHANNEL_ID or None))
    for e in _bot_entries(settings):
        out.append((e.coze_bot_id, getattr(e, "channel_id", None) or None))
    seen: set[tuple[str, str | None]] = set()
    return [t for t in out if not (t in seen or seen.add(t))]


# -- channel housekeeping -------------------------------------------------------------------------
async def _registry(service) -> dict[str, TempChannel]:
    return {c.channel_id: c for c in await service.channels.all()}


def _stale_after() -> float:
    from cdp.app.conversation import STALE_IN_USE_SECONDS

    return STALE_IN_USE_SECONDS


async def _delete_each(service, channels: list[dict]) -> tuple[int, int]:
    deleted = failed = 0
    for c in channels:
        if await service.delete_channel(str(c["id"])):
            deleted += 1
        else:
            failed += 1
    return deleted, failed


async def sweep_stray_channels(settings, rest, service, now: float | None = None) -> int:
    """Delete `cdp-chat-*` channels older than CHANNEL_SWEEP_AGE that no live request uses, also
    ones the registry never knew or lost (crash, restart of the in-memory store)."""
    age = float(getattr(settings, "CHANNEL_SWEEP_AGE", 3600))
    if age <= 0 or settings.CHANNEL_AUTO_DEL_TIME <= 0:
        return 0  # sweep off, or the user keeps conversation channels (CHANNEL_AUTO_DEL_TIME=0)
    now = time.time() if now is None else now
    channels = await rest.list_guild_channels(settings.GUILD_ID)
    stray = select_stray(channels, await _registry(service), now=now, min_age=age,
                         stale_after=_stale_after(), keep_ids=configured_channel_ids(settings))
    if stray:
        log.info("deleting stray temporary channels", extra={"count": len(stray),
                                                             "channel_ids": [c["id"] for c in stray]})
    deleted, _ = await _delete_each(service, stray)
    return deleted


async def free_channel_slots(settings, rest, service, mode: str | None = None) -> int:
    """The guild is full (Discord code 30013): delete `cdp-chat-*` channels per MAX_CHANNEL_DEL_TYPE
    (ALL = all of them, OLDEST = the oldest), sparing channels of live requests. Returns how many
    were deleted (0 = nothing could be freed)."""
    mode = settings.MAX_CHANNEL_DEL_TYPE if mode is None else mode
    channels = await rest.list_guild_channels(settings.GUILD_ID)
    victims = select_to_free(mode, channels, await _registry(service), now=time.time(),
                             stale_after=_stale_after(), keep_ids=configured_channel_ids(settings))
    log.warning("guild channel limit reached; deleting temporary channels",
                extra={"mode": mode, "count": len(victims)})
    deleted, _ = await _delete_each(service, victims)
    return deleted


async def delete_all_temp_channels(settings, rest, service) -> tuple[int, int]:
    """Every `cdp-chat-*` channel of the guild except configured ones (GET /api/channel/del/all/cdp,
    as the original: also channels of requests in progress). Returns (deleted, failed)."""
    channels = await rest.list_guild_channels(settings.GUILD_ID)
    return await _delete_each(service, temp_channels(channels, configured_channel_ids(settings)))


# -- jobs ------------------------------------------------------------------------------------------
async def cleanup(settings, stores, rest, service, *, sweep: bool = True) -> dict:
    """Delete every registered temporary channel whose time has come (also ones a crash left), then
    (sweep=True) stray `cdp-chat-*` channels older than CHANNEL_SWEEP_AGE that nothing uses."""
    deleted = await service.delete_due_channels()
    result = {"deleted": deleted}
    if sweep:
        result["swept"] = await sweep_stray_channels(settings, rest, service)
    result["files_pruned"] = await prune_rehosted_images(settings)
    return result


async def prune_rehosted_images(settings) -> int:
    """Re-hosted images in the local FILES_DIR older than FILES_RETENTION_DAYS (S3: lifecycle rule)."""
    days = getattr(settings, "FILES_RETENTION_DAYS", 0)
    if not days or getattr(settings, "BLOB_BUCKET", ""):
        return 0
    from cdp.adapters.blobs import LocalBlobStore

    return await LocalBlobStore(settings.FILES_DIR).prune(time.time() - days * 86400)


async def keepalive(settings, stores, rest, service, *, force: bool = False) -> dict:
    """Post one message mentioning each configured Coze bot, as a Discord user
    (COZE_BOT_STAY_ACTIVE_ENABLE; the original did this daily at 09:10 TZ): in the bot's channelId
    or CHANNEL_ID, else in a temporary channel deleted afterwards."""
    from cdp.app.pool import NoUsableAccount
    from cdp.domain.discord import DiscordError, DiscordUnauthorized, DiscordVerificationRequired

    if not settings.COZE_BOT_STAY_ACTIVE_ENABLE and not force:
        return {"sent": 0, "skipped": "COZE_BOT_STAY_ACTIVE_ENABLE=0"}
    if not settings.user_tokens:
        return {"sent": 0, "skipped": "no USER_AUTHORIZATION"}
    targets = keepalive_targets(settings)
    temp_channel: str | None = None
    sent, failed = 0, []
    try:
        for bot_id, channel_id in targets:
            if channel_id is None:
                if temp_channel is None:
                    temp_channel = await _keepalive_channel(settings, rest, service)
                channel_id = temp_channel
            if channel_id is None:
                failed.append(bot_id)
                continue
            tried: set[str] = set()
            while True:  # the pool's healthy accounts, least recently used first; another if refused
                try:
                    token, account = await service.pool.acquire(tried)
                except NoUsableAccount:
                    failed.append(bot_id)
                    break
                tried.add(account)
                try:
                    await rest.send_user_message(token, channel_id, f"<@{bot_id}> {KEEPALIVE_TEXT}",
                                                 nonce=str(uuid.uuid4().int % 10**18),
                                                 allowed_user_ids=[bot_id])
                    sent += 1
                    log.info("keepalive sent", extra={"coze_bot_id": bot_id, "channel_id": channel_id,
                                                      "account": account})
                    break
                except DiscordError as exc:
                    log.warning("keepalive message refused", extra={"account": account,
                                                                    "coze_bot_id": bot_id, "status": exc.status})
                    if isinstance(exc, (DiscordUnauthorized, DiscordVerificationRequired)):
                        await service.pool.mark_dead(account, "refused by Discord during keepalive")
    finally:
        if temp_channel is not None:
            if sent:  # let the Coze bot see the mention before its channel goes
                await asyncio.sleep(_grace(settings))
            await service.delete_channel(temp_channel)
    return {"sent": sent, "failed": failed}


def _grace(settings) -> float:
    auto = settings.CHANNEL_AUTO_DEL_TIME
    return KEEPALIVE_CHANNEL_GRACE if auto <= 0 else min(KEEPALIVE_CHANNEL_GRACE, auto)


async def _keepalive_channel(settings, rest, service) -> str | None:
    """A temporary channel for keepalives, registered first-class so a crash never orphans it."""
    from cdp.domain.discord import DiscordError

    name = f"{TEMP_CHANNEL_PREFIX}keepalive-{uuid.uuid4().hex[:12]}"
    try:
        channel = await rest.create_channel(settings.GUILD_ID, name, type=0)
    except DiscordError as exc:
        log.error("keepalive: could not create a temporary channel", extra={"status": exc.status,
                                                                           "code": exc.code})
        return None
    now = time.time()
    await service.channels.add(TempChannel(channel["id"], settings.GUILD_ID, now,
                                           now + _grace(settings) + 60, "keepalive"))
    return channel["id"]


async def daily_reset(settings, stores, rest, service) -> dict:
    """The daily reset of resting accounts and bots (Coze's daily limits).

    Rests recorded by the account pool end by themselves at their `resting_until` (the next reset,
    cdp.domain.accounts), so nothing must run. If the service offers `reset_daily_limits()` (an
    explicit reset, e.g. to log or alert), it is called here at the reset time.
    """
    hook = getattr(service, "reset_daily_limits", None)
    if hook is None:
        return {"reset": 0, "skipped": "rests expire on their own (resting_until)"}
    result = await hook()
    return {"reset": int(result or 0)}


# -- `cdp serve`'s schedule ------------------------------------------------------------------------
def schedule_jobs(scheduler, settings, stores, rest, service) -> None:
    """What `cdp serve` runs by itself (on AWS, EventBridge Scheduler runs the Lambdas instead)."""
    from cdp.app.scheduler import daily, every, parse_time_of_day, zone

    objs = (settings, stores, rest, service)
    tz = zone(settings.TZ)
    scheduler.add("cleanup", lambda: cleanup(*objs, sweep=False), every(settings.CLEANUP_INTERVAL))
    if settings.CHANNEL_SWEEP_AGE > 0 and settings.CHANNEL_AUTO_DEL_TIME > 0:
        # soon after start, so channels a crash or restart left behind go without waiting an interval
        scheduler.add("sweep", lambda: sweep_stray_channels(settings, rest, service),
                      every(settings.CHANNEL_SWEEP_INTERVAL, first_after=min(10.0, settings.CHANNEL_SWEEP_INTERVAL)))
    if settings.COZE_BOT_STAY_ACTIVE_ENABLE:
        scheduler.add("keepalive", lambda: keepalive(*objs), daily(parse_time_of_day(settings.KEEPALIVE_TIME), tz))
    reset_at = getattr(settings, "DAILY_RESET_TIME", "") or "00:00"
    scheduler.add("daily_reset", lambda: daily_reset(*objs), daily(parse_time_of_day(reset_at), tz))
