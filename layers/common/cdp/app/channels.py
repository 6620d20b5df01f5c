"""The channel keeper: the one owner of the temporary `cdp-chat-*` conversation channels; and
GuildChannels: which other channel ids the proxy may act on at all (channels of GUILD_ID only).

The keeper creates them (private with TEMP_CHANNEL_PRIVATE: only the CDP bot, the posting account and
the Coze bot see them), alerts once creation keeps failing (risk control suspected), registers them in
the ChannelRegistry, schedules and performs their deletion, frees slots when the guild is full
(MAX_CHANNEL_DEL_TYPE), sweeps stray ones and deletes them all on request. Used by the conversation
and by the jobs; which channels qualify is decided by cdp.domain.housekeeping.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Collection, Coroutine, Sequence
from typing import Any

from cdp.app import errors as se
from cdp.app.alerts import BOT_RISK, Alerts
from cdp.domain.discord import (
    MESSAGE_CHANNEL_TYPES,
    PRIVATE_MEMBER_ALLOW,
    DiscordError,
    DiscordForbidden,
    DiscordMaxChannels,
    DiscordNotFound,
    DiscordRateLimited,
    DiscordUnauthorized,
    private_overwrites,
)
from cdp.domain.housekeeping import (
    STALE_IN_USE_SECONDS,
    TEMP_CHANNEL_PREFIX,
    select_stray,
    select_to_free,
    temp_channels,
)
from cdp.domain.model import TempChannel
from cdp.ports import ChannelRegistry, DiscordRestPort
from cdp.settings import Settings

log = logging.getLogger("cdp.app.channels")

# This many channel creations failing in a row (errors, timeouts) suggest Discord risk-controls the
# CDP bot: one Telegram alert (at most daily).
RISK_ALERT_AFTER_FAILURES = 3
# At shutdown (`cdp serve` on SIGTERM): deletions due within SHUTDOWN_DUE_WITHIN seconds are done now
# (a few seconds early: the request is over); later ones stay in the ChannelRegistry with their
# delete_at, for the next start's cleanup job. The whole shutdown waits SHUTDOWN_WAIT seconds at most.
SHUTDOWN_DUE_WITHIN = 5.0
SHUTDOWN_WAIT = 10.0


class ChannelKeeper:
    """Creates, registers and deletes temporary channels; keeps the background deletions alive."""

    def __init__(self, settings: Settings, rest: DiscordRestPort, registry: ChannelRegistry, *,
                 keep_ids: Collection[str] = (), clock: Callable[[], float] = time.time,
                 alerts: Alerts | None = None) -> None:
        self.settings = settings
        self.rest = rest
        self.registry = registry
        self.keep_ids = frozenset(keep_ids)  # configured channels: never deleted as temporary
        self.clock = clock
        self.alerts = alerts
        self._failures = 0  # consecutive channel-creation failures (risk-control alert)
        self._tasks: set[asyncio.Task] = set()
        self._pending: dict[str, tuple[asyncio.Task, float]] = {}  # channel id -> (deleting task, delete_at)
        # Channels created here for a request that has not handed them back yet (no deletion time):
        # at shutdown, any still here belong to requests the shutdown cut, and are released then.
        self._unreleased: set[str] = set()
        self._bot_user_id: str | None = None

    # -- creation --------------------------------------------------------------------------------
    async def bot_user_id(self) -> str:
        """The CDP bot's own user id (GET /users/@me once per process)."""
        if self._bot_user_id is None:
            self._bot_user_id = str((await self.rest.get_current_user())["id"])
        return self._bot_user_id

    async def create(self, request_id: str, members: Sequence[str] | None = None) -> str:
        """A new temporary channel for this request, registered as in use. Raises ServiceError.

        `members` (user ids: the posting account, the Coze bot) make it private: @everyone may not see
        it; the CDP bot and `members` may see it, post and read its history. None = visible to all."""
        s = self.settings
        name = f"{TEMP_CHANNEL_PREFIX}{request_id.removeprefix('req_')}"[:100]
        try:
            overwrites = None
            if members is not None:
                overwrites = private_overwrites(s.GUILD_ID, [await self.bot_user_id(), *members])
            try:
                channel = await self.rest.create_channel(s.GUILD_ID, name, type=0,
                                                         permission_overwrites=overwrites)
            except DiscordMaxChannels:
                if not await self.free_slots():
                    raise
                channel = await self.rest.create_channel(s.GUILD_ID, name, type=0,
                                                         permission_overwrites=overwrites)  # once
        except DiscordMaxChannels:
            hint = ("no cdp-chat-* channel could be deleted (MAX_CHANNEL_DEL_TYPE); delete channels by hand"
                    if s.MAX_CHANNEL_DEL_TYPE else "delete old channels or set MAX_CHANNEL_DEL_TYPE")
            raise se.unavailable(f"The Discord server has reached its channel limit (500): {hint}.", 60,
                                 code="channel_limit") from None
        except DiscordRateLimited as exc:
            raise se.unavailable("Discord is rate limiting channel creation; retry shortly.",
                                 int((exc.retry_after or 5) + 1), code="discord_rate_limited") from None
        except DiscordUnauthorized:
            self._creation_failed()
            raise se.unavailable("The CDP bot (BOT_TOKEN) was refused by Discord; check BOT_TOKEN.", 300,
                                 code="bot_unauthorized") from None
        except DiscordForbidden as exc:
            self._creation_failed()  # a permission taken away is also how risk control shows
            need = ("Manage Channels and Manage Roles (private channels; or set TEMP_CHANNEL_PRIVATE=0)"
                    if members is not None else "Manage Channels")
            raise se.upstream_error(f"The CDP bot may not create conversation channels ({exc.status}, code "
                                    f"{exc.code}): give its role {need}.",
                                    code="bot_missing_permissions") from None
        except DiscordError as exc:
            self._creation_failed()
            raise se.upstream_error(f"Discord refused to create a conversation channel ({exc.status}, "
                                    f"code {exc.code}).") from None
        self._failures = 0
        try:
            await self.registry.add(TempChannel(channel["id"], s.GUILD_ID, self.clock(), None, request_id))
        except BaseException:  # the store failed (or the request was cut): nothing will use the channel
            self.spawn(self.delete(channel["id"]))
            raise
        self._unreleased.add(channel["id"])
        return channel["id"]

    async def grant(self, channel_id: str, user_id: str) -> None:
        """Let one more member see and post in a private channel (an account failed over to)."""
        await self.rest.set_channel_permission(channel_id, user_id, PRIVATE_MEMBER_ALLOW)

    async def create_keepalive(self, lifetime: float, members: Sequence[str] | None = None) -> str | None:
        """A temporary channel for keepalives, registered first-class (deleted after `lifetime` s at
        the latest) so a crash never orphans it; None if Discord refused. `members` (the Coze bots)
        make it private as in create(); the posting accounts are let in with grant()."""
        name = f"{TEMP_CHANNEL_PREFIX}keepalive-{uuid.uuid4().hex[:12]}"
        try:
            overwrites = None
            if members is not None:
                overwrites = private_overwrites(self.settings.GUILD_ID, [await self.bot_user_id(), *members])
            channel = await self.rest.create_channel(self.settings.GUILD_ID, name, type=0,
                                                     permission_overwrites=overwrites)
        except DiscordError as exc:
            log.error("keepalive: could not create a temporary channel", extra={"status": exc.status,
                                                                               "code": exc.code})
            return None
        now = self.clock()
        await self.registry.add(TempChannel(channel["id"], self.settings.GUILD_ID, now, now + lifetime,
                                            "keepalive"))
        return channel["id"]

    def _creation_failed(self) -> None:
        """Count a failed channel creation; alert once they keep failing (risk control suspected)."""
        self._failures += 1
        if self._failures >= RISK_ALERT_AFTER_FAILURES and self.alerts is not None:
            self.alerts.notify(BOT_RISK, f"The CDP bot failed to create a channel {self._failures} "
                                         "times in a row (errors or timeouts): Discord may be "
                                         "risk-controlling it. Check the bot in the Developer Portal.")

    # -- deletion --------------------------------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        """Run `coro` in the background, keeping a reference so it is not garbage-collected."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def schedule_delete(self, channel_id: str) -> None:
        """The request using this channel ended: delete it after CHANNEL_AUTO_DEL_TIME (0 = keep it)."""
        delay = self.settings.CHANNEL_AUTO_DEL_TIME
        if delay <= 0:
            self._unreleased.discard(channel_id)
            await self.registry.remove(channel_id)  # 0 = keep the channel
            return
        # The in-process deletion is set up before the store write, with nothing awaited in between:
        # a shutdown that comes while the write is under way still finds the channel in `_pending`.
        delete_at = self.clock() + delay
        task = self.spawn(self._delete_later(channel_id, delay))
        self._pending[channel_id] = (task, delete_at)
        task.add_done_callback(lambda t, cid=channel_id: self._forget_pending(cid, t))
        self._unreleased.discard(channel_id)
        try:
            await self.registry.schedule_delete(channel_id, delete_at)
        except Exception:  # the store is failing: this process still deletes it when its time comes
            log.warning("could not register the temporary channel's deletion time; deleting it from here",
                        extra={"channel_id": channel_id}, exc_info=True)

    async def postpone(self, channel_id: str, delete_at: float) -> None:
        """A sticky conversation's channel (cdp.app.sticky): deleted at `delete_at` by the cleanup job
        (the registry holds the time, for every process); an in-process deletion timer is cancelled."""
        self._unreleased.discard(channel_id)
        pending = self._pending.pop(channel_id, None)
        if pending is not None:
            pending[0].cancel()
        await self.registry.schedule_delete(channel_id, delete_at)

    def _forget_pending(self, channel_id: str, task: asyncio.Task) -> None:
        if self._pending.get(channel_id, (None, 0.0))[0] is task:
            del self._pending[channel_id]

    async def _delete_later(self, channel_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            await self.delete(channel_id)
        except Exception:  # the store is unreachable: the registry entry stays, the cleanup job retries
            log.warning("temporary channel deletion failed; the cleanup job will retry",
                        extra={"channel_id": channel_id}, exc_info=True)

    async def delete(self, channel_id: str) -> bool:
        """Delete the channel in Discord (already gone counts as done), then forget it."""
        self._unreleased.discard(channel_id)
        try:
            await self.rest.delete_channel(channel_id)
        except DiscordNotFound:
            pass  # already gone
        except DiscordError as exc:
            log.warning("could not delete temporary channel; the cleanup job will retry",
                        extra={"channel_id": channel_id, "status": exc.status})
            return False
        await self.registry.remove(channel_id)
        return True

    async def delete_due(self) -> int:
        """Delete every registered temporary channel whose time has come (also after a restart), but
        those this process's own delayed deletion is about to delete (a second DELETE would only cost
        a 404 from Discord's deletion rate limit)."""
        done = 0
        now = self.clock()
        for ch in await self.registry.due(now, stale_before=now - STALE_IN_USE_SECONDS):
            task = self._pending.get(ch.channel_id, (None, 0.0))[0]
            if task is not None and not task.done():
                continue
            done += await self.delete(ch.channel_id)
        return done

    async def free_slots(self) -> int:
        """The guild is full (Discord code 30013): delete `cdp-chat-*` channels per MAX_CHANNEL_DEL_TYPE
        (ALL = all of them, OLDEST = the oldest), sparing channels of live requests. Returns how many
        were deleted (0 = nothing could be freed)."""
        mode = self.settings.MAX_CHANNEL_DEL_TYPE
        if not mode:
            return 0
        try:
            channels = await self.rest.list_guild_channels(self.settings.GUILD_ID)
            victims = select_to_free(mode, channels, await self._registered(), now=time.time(),
                                     stale_after=STALE_IN_USE_SECONDS, keep_ids=self.keep_ids)
            log.warning("guild channel limit reached; deleting temporary channels",
                        extra={"mode": mode, "count": len(victims)})
            deleted, _ = await self._delete_each(victims)
        except DiscordError as exc:
            log.warning("could not free channel slots", extra={"status": exc.status, "code": exc.code})
            return 0
        return deleted

    async def sweep(self, now: float | None = None) -> int:
        """Delete `cdp-chat-*` channels older than CHANNEL_SWEEP_AGE that no live request uses, also
        ones the registry never knew or lost (crash, restart of the in-memory store)."""
        s = self.settings
        if s.CHANNEL_SWEEP_AGE <= 0 or s.CHANNEL_AUTO_DEL_TIME <= 0:
            return 0  # sweep off, or the user keeps conversation channels (CHANNEL_AUTO_DEL_TIME=0)
        now = time.time() if now is None else now
        channels = await self.rest.list_guild_channels(s.GUILD_ID)
        stray = select_stray(channels, await self._registered(), now=now, min_age=s.CHANNEL_SWEEP_AGE,
                             stale_after=STALE_IN_USE_SECONDS, keep_ids=self.keep_ids)
        if stray:
            log.info("deleting stray temporary channels", extra={"count": len(stray),
                                                                 "channel_ids": [c["id"] for c in stray]})
        deleted, _ = await self._delete_each(stray)
        return deleted

    async def delete_all(self) -> tuple[int, int]:
        """Every `cdp-chat-*` channel of the guild except configured ones (GET /api/channel/del/all/cdp,
        as the original: also channels of requests in progress). Returns (deleted, failed)."""
        channels = await self.rest.list_guild_channels(self.settings.GUILD_ID)
        return await self._delete_each(temp_channels(channels, self.keep_ids))

    async def _registered(self) -> dict[str, TempChannel]:
        return {c.channel_id: c for c in await self.registry.all()}

    async def _delete_each(self, channels: list[dict]) -> tuple[int, int]:
        deleted = failed = 0
        for c in channels:
            if await self.delete(str(c["id"])):
                deleted += 1
            else:
                failed += 1
        return deleted, failed

    async def _release_at_shutdown(self, channel_id: str) -> None:
        try:
            await self.schedule_delete(channel_id)
        except Exception:  # the store: the stale sweep deletes it later
            log.warning("shutdown: could not release a cut request's channel", extra={"channel_id": channel_id},
                        exc_info=True)

    async def aclose(self, wait: float = SHUTDOWN_WAIT, due_within: float = SHUTDOWN_DUE_WITHIN) -> None:
        """Shutdown, bounded by `wait` seconds: let background work end (conversations closing register
        their channel's deletion), perform the deletions due within `due_within` s, and leave the later
        ones registered (with their delete_at) for the next start's cleanup job. Nothing is dropped."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        pending_tasks = {t for t, _ in self._pending.values()}
        others = [t for t in self._tasks if t not in pending_tasks]
        if others:  # closing conversations, interaction follow-ups: they may schedule deletions
            await asyncio.wait(others, timeout=max(0.0, deadline - loop.time()) / 2)
        if self._unreleased:  # requests the shutdown cut before they handed their channel back
            log.warning("shutdown: releasing the channels of cut requests", extra={"count": len(self._unreleased)})
            jobs = [loop.create_task(self._release_at_shutdown(cid)) for cid in list(self._unreleased)]
            await asyncio.wait(jobs, timeout=max(0.1, deadline - loop.time()) / 2)
        now = self.clock()
        pending = dict(self._pending)
        for task, _ in pending.values():
            task.cancel()  # the sleeps; the registry keeps each channel's delete_at
        due = [cid for cid, (_, at) in pending.items() if at <= now + due_within]
        later = len(pending) - len(due)
        deleted = 0
        if due:
            jobs = [loop.create_task(self.delete(cid)) for cid in due]
            done, not_done = await asyncio.wait(jobs, timeout=max(0.1, deadline - loop.time()))
            for job in not_done:
                job.cancel()
            deleted = sum(1 for job in done if not job.cancelled() and job.exception() is None and job.result())
            if not_done:
                await asyncio.wait(not_done, timeout=1.0)
        if pending:
            log.info("shutdown: temporary channels deleted now or left registered for the cleanup job",
                     extra={"deleted": deleted, "registered": len(pending) - deleted, "later": later})
        rest = [t for t in self._tasks if not t.done()]
        for task in rest:
            task.cancel()
        if rest:
            await asyncio.wait(rest, timeout=1.0)


# -- which channels the proxy may act on --------------------------------------------------------------
# How long a verdict on a channel id is remembered (seconds), and how many ids at most. A channel never
# changes server, and deletion is seen at once (forget()); a refusal is remembered too, so a key holder
# repeating a bad id costs the bot no Discord call (its REST budget is shared by every request).
CHANNEL_CHECK_TTL = 300.0
CHANNEL_CHECK_REFUSED_TTL = 60.0
CHANNEL_CHECK_MAX_ENTRIES = 2048
CHANNEL_TYPE_NAMES = {0: "text channel", 1: "direct message", 2: "voice channel", 3: "group DM", 4: "category",
                      5: "announcement channel", 10: "thread", 11: "thread", 12: "thread", 13: "stage channel",
                      15: "forum", 16: "media channel"}


class GuildChannels:
    """Checks that a channel id is a channel of GUILD_ID of the wanted types before anything is posted,
    created or deleted there: a `channelId` of a request, a bot's `channelId` in bot_config.json,
    CHANNEL_ID, and the ids of the original's /api routes. Asks Discord once (GET /channels/{id} with
    the bot token) and caches the answer here, next to the rule that reads it: the REST adapter stays
    a stateless client, so `cdp doctor` and the cleanup job always see Discord's live state."""

    def __init__(self, settings: Settings, rest: DiscordRestPort, *, clock: Callable[[], float] = time.monotonic,
                 ttl: float = CHANNEL_CHECK_TTL, refused_ttl: float = CHANNEL_CHECK_REFUSED_TTL,
                 max_entries: int = CHANNEL_CHECK_MAX_ENTRIES) -> None:
        self.settings = settings
        self.rest = rest
        self.clock = clock
        self.ttl = ttl
        self.refused_ttl = refused_ttl
        self.max_entries = max_entries
        self._cache: OrderedDict[str, tuple[float, dict | None]] = OrderedDict()  # id -> (expires, channel)

    def forget(self, channel_id: str) -> None:
        """The channel was deleted: the next check asks Discord again."""
        self._cache.pop(str(channel_id), None)

    async def lookup(self, channel_id: str) -> dict | None:
        """{"id", "guild_id", "type", "name"} of the channel, or None if the bot cannot see it (unknown
        id, another server, a DM). Transient failures raise ServiceError and are not cached."""
        now = self.clock()
        hit = self._cache.get(channel_id)
        if hit is not None and hit[0] > now:
            self._cache.move_to_end(channel_id)
            return hit[1]
        try:
            raw = await self.rest.get_channel(channel_id)
            channel: dict | None = {"id": str(raw.get("id")), "guild_id": raw.get("guild_id"),
                                    "type": raw.get("type"), "name": raw.get("name")}
        except (DiscordNotFound, DiscordForbidden):
            channel = None
        except DiscordUnauthorized:
            raise se.unavailable("The CDP bot (BOT_TOKEN) was refused by Discord; check BOT_TOKEN.", 300,
                                 code="bot_unauthorized") from None
        except DiscordRateLimited as exc:
            raise se.unavailable("Discord is rate limiting the bot; retry shortly.",
                                 int((exc.retry_after or 5) + 1), code="discord_rate_limited") from None
        except DiscordError as exc:
            raise se.upstream_error(f"Discord could not be asked about channel {channel_id} ({exc.status}, "
                                    f"code {exc.code}).") from None
        self._cache[channel_id] = (now + (self.ttl if channel is not None else self.refused_ttl), channel)
        self._cache.move_to_end(channel_id)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return channel

    async def require(self, channel_id: str, *, what: str = "channelId", param: str | None = "channelId",
                      types: frozenset[int] = MESSAGE_CHANNEL_TYPES, kind: str = "a text channel or thread") -> dict:
        """The channel if it is one of GUILD_ID of `types`; else ServiceError (invalid_request, code
        channel_not_found or channel_not_allowed) naming `what` (the field or setting that held it)."""
        guild = self.settings.GUILD_ID
        channel = await self.lookup(str(channel_id))
        if channel is None:
            raise se.invalid_request(f"{what}: channel {channel_id} does not exist or the CDP bot cannot see "
                                     f"it; use {kind} of the proxy's Discord server ({guild}).",
                                     param=param, code="channel_not_found")
        if str(channel.get("guild_id") or "") != guild:
            where = "a direct message" if not channel.get("guild_id") else "a channel of another server"
            raise se.invalid_request(f"{what}: channel {channel_id} is {where}; only {kind} of the proxy's "
                                     f"Discord server ({guild}) may be used.", param=param,
                                     code="channel_not_allowed")
        if channel.get("type") not in types:
            name = CHANNEL_TYPE_NAMES.get(channel.get("type"), f"channel of type {channel.get('type')}")
            raise se.invalid_request(f"{what}: channel {channel_id} is a {name}, not {kind}.", param=param,
                                     code="channel_not_allowed")
        return channel
