"""Scheduled jobs, called by the Lambdas (functions/cleanup, functions/keepalive), by `cdp serve`'s
own scheduler (cdp.app.scheduler) and by `cdp cleanup` / `cdp keepalive`. Each takes the objects
built by cdp.entry.bootstrap and returns a summary dict; channels go through the service's
channel keeper (cdp.app.channels).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from cdp.app.conversation import ConversationService
from cdp.app.errors import ServiceError
from cdp.app.pool import NoUsableAccount
from cdp.app.scheduler import Scheduler, daily, every
from cdp.domain.discord import DiscordError, DiscordUnauthorized, DiscordVerificationRequired, new_nonce
from cdp.domain.routing import BotEntry
from cdp.domain.schedule import parse_time_of_day, zone
from cdp.ports import BlobStore, DiscordRestPort, Stores
from cdp.settings import Settings

log = logging.getLogger("cdp.app.jobs")

KEEPALIVE_TEXT = "keepalive"
KEEPALIVE_CHANNEL_GRACE = 5.0  # seconds the Coze bot gets to see a keepalive in a temporary channel
KEEPALIVE_LEASE_SECONDS = 30.0  # an account's slot for one keepalive post (the queue adds its margin)


def keepalive_targets(settings: Settings, entries: Iterable[BotEntry]) -> list[tuple[str, str | None]]:
    """(Coze bot id, channel id or None) pairs: every COZE_BOT_ID in CHANNEL_ID, and every
    bot_config entry in its channelId, without duplicates (as the original's daily task)."""
    out: list[tuple[str, str | None]] = []
    for bot in settings.coze_bot_ids:
        out.append((bot, settings.CHANNEL_ID or None))
    for e in entries:
        out.append((e.coze_bot_id, e.channel_id or None))
    seen: set[tuple[str, str | None]] = set()
    return [t for t in out if not (t in seen or seen.add(t))]


# -- jobs ------------------------------------------------------------------------------------------
async def cleanup(settings: Settings, stores: Stores, rest: DiscordRestPort, service: ConversationService, *,
                  sweep: bool = True) -> dict:
    """Delete every registered temporary channel whose time has come (also ones a crash left), then
    (sweep=True) stray `cdp-chat-*` channels older than CHANNEL_SWEEP_AGE that nothing uses."""
    deleted = await service.keeper.delete_due()
    result = {"deleted": deleted}
    if sweep:
        result["swept"] = await service.keeper.sweep()
    result["files_pruned"] = await prune_rehosted_images(settings, stores.blobs)
    return result


async def prune_rehosted_images(settings: Settings, blobs: BlobStore | None) -> int:
    """Re-hosted images older than FILES_RETENTION_DAYS (the local folder; S3 has a lifecycle rule)."""
    days = settings.FILES_RETENTION_DAYS
    if not days or blobs is None:
        return 0
    return await blobs.prune(time.time() - days * 86400)


async def keepalive(settings: Settings, stores: Stores, rest: DiscordRestPort, service: ConversationService, *,
                    force: bool = False) -> dict:
    """Post one message mentioning each configured Coze bot, as a Discord user
    (COZE_BOT_STAY_ACTIVE_ENABLE; the original did this daily at 09:10 TZ): in the bot's channelId
    or CHANNEL_ID, else in a temporary channel deleted afterwards."""
    if not settings.COZE_BOT_STAY_ACTIVE_ENABLE and not force:
        return {"sent": 0, "skipped": "COZE_BOT_STAY_ACTIVE_ENABLE=0"}
    if not settings.user_tokens:
        return {"sent": 0, "skipped": "no USER_AUTHORIZATION"}
    targets = keepalive_targets(settings, service.router.entries)
    grace = _grace(settings)
    temp_channel: str | None = None
    # A private keepalive channel admits the Coze bots it mentions, then each posting account.
    private = settings.TEMP_CHANNEL_PRIVATE
    temp_members = [bot for bot, channel in targets if channel is None] if private else None
    sent, failed = 0, []
    try:
        for bot_id, channel_id in targets:
            if channel_id is None:
                if temp_channel is None:
                    temp_channel = await service.keeper.create_keepalive(grace + 60, members=temp_members)
                channel_id = temp_channel
            elif not await _in_guild(service, bot_id, channel_id):
                channel_id = None
            if channel_id is None:
                failed.append(bot_id)
                continue
            if await _post_keepalive(service, rest, bot_id, channel_id,
                                     let_in=private and channel_id == temp_channel):
                sent += 1
            else:
                failed.append(bot_id)
    finally:
        if temp_channel is not None:
            if sent:  # let the Coze bot see the mention before its channel goes
                await asyncio.sleep(grace)
            await service.keeper.delete(temp_channel)
    return {"sent": sent, "failed": failed}


async def _post_keepalive(service: ConversationService, rest: DiscordRestPort, bot_id: str, channel_id: str, *,
                          let_in: bool) -> bool:
    """One keepalive mention of `bot_id` in `channel_id`, posted by the pool's healthy accounts (least
    recently used first; the next one if Discord refuses). Goes through the fair queue like any prompt,
    so ACCOUNT_MAX_CONCURRENT and ACCOUNT_MIN_GAP hold. `let_in`: grant the account the private
    temporary channel first."""
    lease = service.queue.lease("keepalive", f"keepalive-{bot_id}", KEEPALIVE_LEASE_SECONDS) \
        if service.queue is not None else None
    tried: set[str] = set()
    try:
        while True:
            try:
                token, account = await (lease.acquire(tried) if lease is not None else service.pool.acquire(tried))
            except (NoUsableAccount, ServiceError) as exc:
                log.warning("keepalive: no account could post", extra={"coze_bot_id": bot_id,
                                                                      "reason": getattr(exc, "message", "")})
                return False
            tried.add(account)
            try:
                if let_in and not await _let_in(service, channel_id, await service.account_user_id(token, account)):
                    return False
                await rest.send_user_message(token, channel_id, f"<@{bot_id}> {KEEPALIVE_TEXT}",
                                             nonce=new_nonce(), allowed_user_ids=[bot_id])
                log.info("keepalive sent", extra={"coze_bot_id": bot_id, "channel_id": channel_id,
                                                  "account": account})
                return True
            except DiscordError as exc:
                log.warning("keepalive message refused", extra={"account": account,
                                                                "coze_bot_id": bot_id, "status": exc.status})
                if isinstance(exc, (DiscordUnauthorized, DiscordVerificationRequired)):
                    await service.pool.mark_dead(account, "refused by Discord during keepalive")
    finally:
        if lease is not None:
            await lease.release()


async def _in_guild(service: ConversationService, bot_id: str, channel_id: str) -> bool:
    """A configured keepalive channel must be a text channel or thread of GUILD_ID, as for chats:
    the user accounts never post anywhere else."""
    try:
        await service.guild_channels.require(channel_id, param=None, what=f"keepalive channel of bot {bot_id}")
        return True
    except ServiceError as exc:
        log.error("keepalive: channel refused", extra={"coze_bot_id": bot_id, "channel_id": channel_id,
                                                       "reason": exc.message})
        return False


async def _let_in(service: ConversationService, channel_id: str, user_id: str) -> bool:
    """Grant a posting account the private keepalive channel (a bot call: its errors are the bot's,
    never the account's)."""
    try:
        await service.keeper.grant(channel_id, user_id)
        return True
    except DiscordError as exc:
        log.error("keepalive: could not let the account into the private channel",
                  extra={"channel_id": channel_id, "status": exc.status, "code": exc.code})
        return False


def _grace(settings: Settings) -> float:
    auto = settings.CHANNEL_AUTO_DEL_TIME
    return KEEPALIVE_CHANNEL_GRACE if auto <= 0 else min(KEEPALIVE_CHANNEL_GRACE, auto)


# -- `cdp serve`'s schedule ------------------------------------------------------------------------
def schedule_jobs(scheduler: Scheduler, settings: Settings, stores: Stores, rest: DiscordRestPort,
                  service: ConversationService) -> None:
    """What `cdp serve` runs by itself (on AWS, EventBridge Scheduler runs the Lambdas instead)."""
    objs = (settings, stores, rest, service)
    tz = zone(settings.TZ)
    scheduler.add("cleanup", lambda: cleanup(*objs, sweep=False), every(settings.CLEANUP_INTERVAL))
    if settings.CHANNEL_SWEEP_AGE > 0 and settings.CHANNEL_AUTO_DEL_TIME > 0:
        # soon after start, so channels a crash or restart left behind go without waiting an interval
        scheduler.add("sweep", service.keeper.sweep,
                      every(settings.CHANNEL_SWEEP_INTERVAL, first_after=min(10.0, settings.CHANNEL_SWEEP_INTERVAL)))
    if settings.COZE_BOT_STAY_ACTIVE_ENABLE:
        scheduler.add("keepalive", lambda: keepalive(*objs), daily(parse_time_of_day(settings.KEEPALIVE_TIME), tz))
