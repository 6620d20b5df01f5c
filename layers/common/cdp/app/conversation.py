"""The conversation use case: route → pick channel and account → post as the user → await the reply.

Everything here talks to ports (Discord REST, ReplyStore) and use cases (the channel keeper for
temporary channels, the account pool); pure rules come from cdp.domain. The API turns a
`Conversation` into an OpenAI response or stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field, replace

from cdp.app import errors as se
from cdp.app.alerts import Alerts
from cdp.app.channels import ChannelKeeper, GuildChannels
from cdp.app.pool import AccountPool, BotHealth, NoUsableAccount, rest_after_limit
from cdp.app.queue import AccountLease, AccountQueue
from cdp.app.sticky import StickyConversations, StickyTurn
from cdp.app.tracing import RequestTrace
from cdp.app.uploads import prepare_uploads
from cdp.domain.completion import Decision, decide, next_wakeup
from cdp.domain.coze import CozeError
from cdp.domain.discord import (
    DiscordError,
    DiscordNotFound,
    DiscordRateLimited,
    DiscordUnauthorized,
    DiscordVerificationRequired,
    new_nonce,
)
from cdp.domain.housekeeping import configured_channel_ids
from cdp.domain.model import ReplySnapshot
from cdp.domain.prompt import LONGEST_BOT_ID, PromptError, build_prompt, check_request_size, split_within
from cdp.domain.reply import ReplyView, render
from cdp.domain.routing import AllRouteResting, BotEntry, NoRoute, Router
from cdp.domain.tokens import count_tokens, max_tokens_bound
from cdp.domain.tools import Emulation
from cdp.ports import (
    NO_METRICS,
    ChannelRegistry,
    ConversationStore,
    DiscordRestPort,
    ListenerPresence,
    Metrics,
    PromptLedger,
    RateLimitStore,
    ReplyStore,
)
from cdp.settings import Settings

log = logging.getLogger("cdp.app.conversation")

# How often an ending (buttons, error text) held back for a recovering listener is looked at again.
ENDING_RECHECK_SECONDS = 0.25


@dataclass(frozen=True)
class ChatSpec:
    """What the API understood of a request; built before anything is posted."""

    request_id: str
    model: str
    messages: list[dict]
    stream: bool
    channel_id: str | None = None
    timeout: float | None = None  # `out-time` header, overrides the settings' timeouts
    api_key: str | None = None
    raw_prompt: str | None = None  # posted as is instead of the messages' prompt (image generation)
    emulation: Emulation | None = None  # tool calls / JSON mode through the prompt (cdp.domain.tools)
    conversation: str | None = None  # a client's name for the conversation (sticky mode)
    # Called as soon as the prompt is, or may be, in Discord: a part was sent, or the request was cut
    # (cancelled: the client left, the server shuts down) while one was being sent. From then on no
    # error may invite a retry, which would post it again (the edge marks the request as posted).
    on_posted: Callable[[], None] | None = field(default=None, compare=False, repr=False)


@dataclass
class Progress:
    """One observation of the reply: the rendered view and whether it is complete."""

    view: ReplyView
    decision: Decision
    changed: bool


@dataclass
class Conversation:
    """A prompt that has been posted: stream it with `updates()` or await `result()`, then close it."""

    spec: ChatSpec
    prompt: str
    counted_prompt_tokens: int | None  # None until `prompt_tokens` is first read
    prompt_message_id: str
    channel_id: str
    temporary_channel: bool
    _service: ConversationService = field(repr=False)
    _closed: bool = False
    account: str = ""  # fingerprint of the user account that posted the prompt
    coze_bot_id: str = ""
    sticky: StickyTurn | None = None  # CONVERSATION_MODE=sticky: the channel outlives the request
    answer: str | None = None  # the complete answer's text, once there is one (sticky mode)
    trace: RequestTrace = field(default_factory=RequestTrace)  # TTFT, edit latency, error kind
    lease: AccountLease | None = None  # the account's slot (cdp.app.queue), given back on close

    @property
    def prompt_tokens(self) -> int:
        """Tokens of the prompt, counted on first use: a stream without usage never loads the table."""
        if self.counted_prompt_tokens is None:
            self.counted_prompt_tokens = count_tokens(self.prompt)
        return self.counted_prompt_tokens

    @property
    def timeout_seconds(self) -> float:
        """The effective timeout: the `out-time` header if sent, else REQUEST_OUT_TIME in total
        (non-stream) or STREAM_REQUEST_OUT_TIME between two updates (stream), as in the original."""
        if self.spec.timeout is not None:
            return self.spec.timeout
        s = self._service.settings
        return s.STREAM_REQUEST_OUT_TIME if self.spec.stream else s.REQUEST_OUT_TIME

    async def updates(self, heartbeat: float | None = None) -> AsyncIterator[Progress]:
        """Yield on every change of the reply, and every `heartbeat` seconds without one; the last
        Progress yielded has decision.done. Timeouts: see `timeout_seconds` (an `out-time` header is
        a total deadline for streams too)."""
        s = self._service.settings
        loop = asyncio.get_running_loop()
        total = self.timeout_seconds
        deadline = loop.time() + total
        revision: tuple = ()
        last_change_at: float | None = None
        view = render(ReplySnapshot(self.prompt_message_id))
        recheck: float | None = None  # set while an ending is held back for a listener that recovers
        last_yield = loop.time()
        while True:
            now = loop.time()
            wait = next_wakeup(view, now=now, last_change_at=last_change_at,
                               idle_timeout=s.REPLY_IDLE_TIMEOUT, deadline=deadline)
            if recheck is not None:
                wait, recheck = max(wait, recheck), None
            if heartbeat is not None:
                wait = min(wait, heartbeat)
            snapshot = await self._service.replies.wait_for_change(self.prompt_message_id, revision, wait)
            if self.lease is not None:  # a long reply keeps its account's slot (a store call per ttl/2)
                await self.lease.keep()
            read_at = time.time()
            now = loop.time()
            changed = snapshot.revision != revision
            if changed:  # render once per change: a heartbeat or a timer wake-up reuses the view
                revision = snapshot.revision
                last_change_at = now
                if self.spec.stream and self.spec.timeout is None:
                    deadline = now + total  # between two updates
                view = render(snapshot)
            decision = decide(view, now=now, last_change_at=last_change_at,
                              idle_timeout=s.REPLY_IDLE_TIMEOUT, deadline=deadline)
            if decision.done and decision.reason == "idle":
                # Silence only means "done" if the listener was connected the whole time: edits
                # missed during a gateway gap are replayed on RESUME, so restart the idle window.
                stable = await self._service.listener_stable_since()
                wall_offset = time.time() - now
                if stable is None or stable > last_change_at + wall_offset:
                    last_change_at = now if stable is None else min(now, stable - wall_offset)
                    continue
            if decision.done and decision.reason in ("buttons", "error_text") and now < deadline:
                # Coze's ending is only the whole reply if the listener missed nothing of it: after a
                # fresh gateway session the earlier messages come back through REST, and the presence
                # says "recording" only once they are in the store. Trust a snapshot read after that.
                stable = await self._service.listener_stable_since()
                if stable is None or stable > read_at:  # not yet: the reply is still waiting
                    recheck, decision = ENDING_RECHECK_SECONDS, Decision(done=False)
            if decision.done and decision.error is not None:
                await self._service.note_coze_error(self, decision.error)
            elif decision.done and decision.finish_reason == "stop":  # complete (not cut by the deadline)
                self.answer = view.text
            self.trace.seen(view, decision, changed, snapshot, self._service.metrics)
            if decision.done and self.lease is not None:
                # the reply is over: the account is free for the next prompt now, not when the
                # response has left (a Lambda may freeze before close()'s background release runs)
                await self.lease.release()
            # Heartbeats (stream pings, the client-gone check) keep their pace while an ending is held.
            beat = heartbeat is not None and (recheck is None or now - last_yield >= heartbeat)
            if changed or decision.done or beat:
                last_yield = now
                yield Progress(view, decision, changed)
            if decision.done:
                return

    async def result(self, client_gone: Callable[[], Awaitable[bool]] | None = None,
                     check_every: float = 5.0,
                     stop_when: Callable[[Progress], bool] | None = None) -> Progress | None:
        """Await the complete reply (non-streamed requests): its last Progress, decision.done.

        `client_gone` is asked every `check_every` seconds while the reply is incomplete; once it
        says yes, waiting stops and the result is None (nobody is left to answer). `stop_when` is
        asked on every incomplete Progress; once it says yes (the client's max_tokens or stop was
        reached), waiting stops and that Progress is the result, not done."""
        last: Progress | None = None
        async with aclosing(self.updates(heartbeat=check_every)) as updates:
            async for last in updates:
                if not last.decision.done and stop_when is not None and stop_when(last):
                    return last
                if not last.decision.done and client_gone is not None and await client_gone():
                    return None
        assert last is not None and last.decision.done
        return last

    def close(self) -> None:
        """Always called when the request ends (answered, failed or client gone).

        Synchronous on purpose: it runs in `finally` blocks of cancelled streams, where awaiting
        is unsafe; the deletion is scheduled as a task the channel keeper keeps alive.
        """
        if self._closed:
            return
        self._closed = True
        if self.lease is not None:
            self._service.keeper.spawn(self.lease.release())
        if self.sticky is not None:
            self._service.keeper.spawn(self._service.sticky.finish(self.sticky, self.answer))
        elif self.temporary_channel:
            self._service.keeper.spawn(self._schedule_delete())

    async def aclose(self) -> None:
        """`close()` for callers that can await: the deletion is registered in the store before the
        response leaves (on Lambda the process may freeze right after, before a background task runs)."""
        if self._closed:
            return
        self._closed = True
        if self.lease is not None:
            await self.lease.release()
        if self.sticky is not None:
            await self._service.sticky.finish(self.sticky, self.answer)
        elif self.temporary_channel:
            await self._schedule_delete()

    async def _schedule_delete(self) -> None:
        await release_channel(self._service.keeper, self.channel_id, self.spec.request_id)


def channel_gone(exc: BaseException) -> bool:
    """Posting failed because the channel no longer exists (`_post_prompt`'s 404)."""
    return (isinstance(exc, se.ServiceError) and exc.kind is se.ErrorKind.INVALID_REQUEST
            and exc.param == "channelId")


async def release_channel(keeper: ChannelKeeper, channel_id: str, request_id: str) -> None:
    """Hand a temporary channel back to the keeper. A store error is logged, never raised: it must not
    replace the answer or the request's own error, and the cleanup job's stale sweep deletes the
    channel later."""
    try:
        await keeper.schedule_delete(channel_id)
    except Exception:
        log.warning("could not schedule the temporary channel's deletion; the cleanup job's stale "
                    "sweep will delete it", exc_info=True,
                    extra={"request_id": request_id, "channel_id": channel_id})


class ConversationService:
    def __init__(self, settings: Settings, rest: DiscordRestPort, replies: ReplyStore, channels: ChannelRegistry,
                 clock: Callable[[], float] = time.time, presence: ListenerPresence | None = None, *,
                 pool: AccountPool, router: Router | None = None, bots: BotHealth | None = None,
                 alerts: Alerts | None = None, ratelimits: RateLimitStore | None = None,
                 ledger: PromptLedger | None = None, conversations: ConversationStore | None = None,
                 queue: AccountQueue | None = None) -> None:
        self.settings = settings
        self.rest = rest
        self.replies = replies
        self.channels = channels
        self.clock = clock
        self.presence = presence
        self.router = router or Router([], settings.coze_bot_ids)
        self.pool = pool
        self.bots = bots or BotHealth(pool.store, tz=settings.TZ, reset_time=settings.DAILY_RESET_TIME,
                                      clock=clock, alerts=alerts)
        self.alerts = alerts
        self.ratelimits = ratelimits  # RateLimitStore for the API's REQUEST_RATE_LIMIT (cdp.entry.api.limits)
        self.ledger = ledger  # PromptLedger: who posted each prompt (replies-stream cooldowns), or None
        self.keeper = ChannelKeeper(settings, rest, channels, clock=clock, alerts=alerts,
                                    keep_ids=configured_channel_ids(settings.CHANNEL_ID, self.router.entries))
        self.guild_channels = GuildChannels(settings, rest)  # channel ids must be of GUILD_ID
        self._user_ids: dict[str, str] = {}  # account fingerprint -> its Discord user id
        self.sticky = (StickyConversations(settings, conversations, self.keeper, clock=clock)
                       if settings.CONVERSATION_MODE == "sticky" and conversations is not None else None)
        self.metrics: Metrics = NO_METRICS  # set by the edge that builds the service (cdp.entry)
        self.queue = queue  # fair queue and per-account limits; None = the pool alone, no limits

    async def listener_stable_since(self) -> float | None:
        if self.presence is None:
            return 0.0  # unknown: assume connected
        try:
            return await self.presence.stable_since()
        except Exception:
            log.warning("could not read the listener's presence; assuming connected", exc_info=True)
            return 0.0

    # -- routing --------------------------------------------------------------------------------
    def models_for(self, api_key: str | None) -> list[str] | None:
        """Models this key may use (bot_config.json), or None without a bot config (any model)."""
        return self.router.models_for(api_key)

    def listed_models(self, api_key: str | None) -> list[str]:
        """The names /v1/models lists for this key (domain/routing.Router.listed)."""
        return self.router.listed(api_key)

    def serves_model(self, model: str, api_key: str | None) -> bool:
        """Whether chat serves this name for this key: /v1/models/{id} agrees with chat."""
        return self.router.serves(model, api_key)

    async def route(self, spec: ChatSpec) -> BotEntry:
        """The bot that answers: matches of key + model, minus resting bots, one at random."""
        resting = await self.bots.resting()
        try:
            return self.router.route(spec.model, spec.api_key, resting)
        except NoRoute:
            raise se.model_not_found(spec.model) from None
        except AllRouteResting as exc:
            wait = await self.bots.rest_end_of(exc.bot_ids)
            raise se.unavailable(f"Every Coze bot serving model '{spec.model}' is resting after its "
                                 f"developer's daily usage limit was reached; retry in {wait} s or use "
                                 "another model.", wait, code="coze_bot_limited") from None

    async def note_coze_error(self, conv: Conversation, error: CozeError) -> None:
        """Coze answered with an error text: a limit text rests the account or the bot."""
        try:
            await rest_after_limit(error.kind, self.pool, self.bots, account=conv.account,
                                   coze_bot_id=conv.coze_bot_id)
        except Exception:  # health bookkeeping never fails the answer
            log.warning("could not record account/bot health", exc_info=True)

    async def status(self) -> dict:
        """Accounts (by fingerprint) and bots with their health, for /api/status."""
        return {"accounts": await self.pool.status(), "bots": await self.bots.status(self.router.bot_ids()),
                "bot_config": self.router.configured}

    def build_prompt(self, spec: ChatSpec, max_tokens: int | None = None,
                     coze_bot_id: str = LONGEST_BOT_ID) -> tuple[str, int | None]:
        """The prompt and its tokens (None when not counted: under the limit by the byte bound), or a
        ServiceError (400) before anything is posted: more than PROMPT_MAX_MESSAGES messages or
        PROMPT_MAX_CHARS characters of text, more than PROMPT_MAX_PARTS Discord messages, more tokens
        than `max_tokens` (a bot's messageMaxToken) or MESSAGE_MAX_TOKEN. The sizes are checked before
        the tokens are counted, so counting stays bounded."""
        s = self.settings
        try:
            if spec.raw_prompt is not None:
                prompt = spec.raw_prompt
            else:
                check_request_size(spec.messages, s.PROMPT_MAX_MESSAGES, s.PROMPT_MAX_CHARS)
                prompt = build_prompt(spec.messages if spec.emulation is None else
                                      spec.emulation.render_history(spec.messages, s.ALL_DIALOG_RECORD_ENABLE),
                                      s.ALL_DIALOG_RECORD_ENABLE)
                if spec.emulation is not None and spec.emulation.active:
                    prompt += "\n\n" + spec.emulation.instructions()
            split_within(prompt, coze_bot_id, s.PROMPT_MAX_PARTS)
        except PromptError as exc:
            raise se.invalid_request(str(exc), param=exc.param or "messages", code=exc.code) from None
        limit = max_tokens or s.MESSAGE_MAX_TOKEN  # a bot's messageMaxToken overrides
        if max_tokens_bound(prompt) <= limit:
            return prompt, None  # cannot exceed the limit; counted later only if usage is asked for
        tokens = count_tokens(prompt)
        if tokens > limit:
            raise se.context_length_exceeded(tokens, limit)
        return prompt, tokens

    async def _prompt_of(self, spec: ChatSpec, max_tokens: int | None, coze_bot_id: str) -> tuple[str, int]:
        """`build_prompt` off the event loop (tiktoken takes ~0.2 s on 200,000 spaces)."""
        return await asyncio.to_thread(self.build_prompt, spec, max_tokens, coze_bot_id)

    # -- the use case ---------------------------------------------------------------------------
    async def start(self, spec: ChatSpec,
                    client_gone: Callable[[], Awaitable[bool]] | None = None) -> Conversation:
        """Validate, pick a channel and an account, post the prompt. Raises ServiceError.

        Posting a prompt of several parts stops when `client_gone()` says yes or the request's
        timeout has passed (nobody is left to read the answer)."""
        deadline = asyncio.get_running_loop().time() + self.request_seconds(spec)
        # Inline images/files (data: URLs, file parts) are checked before anything is posted.
        uploads = prepare_uploads(spec.messages, self.settings) if spec.raw_prompt is None else None
        bot = await self.route(spec)
        max_tokens = bot.message_max_token
        coze_bot_id = bot.coze_bot_id
        sticky = await self._sticky_turn(spec, bot)
        try:
            if sticky is not None and sticky.continuing:  # only the new user turn: Coze remembers the rest
                spec = replace(spec, messages=[sticky.turn.new])
                uploads = prepare_uploads(spec.messages, self.settings)
            prompt, prompt_tokens = await self._prompt_of(
                replace(spec, messages=uploads.preview(spec.messages)) if uploads else spec, max_tokens,
                coze_bot_id)
        except BaseException:
            if sticky is not None:  # nothing posted: the conversation stays as it was
                await self.sticky.abandon(sticky)
            raise
        # Wait for an account's slot (fair queue; a 429 when too long) before creating anything.
        lease = self.queue.lease(spec.api_key, spec.request_id, self.request_seconds(spec)) if self.queue else None
        try:
            if lease is not None:
                await lease.acquire()
            if sticky is not None and sticky.continuing:
                channel_id, temporary, first = sticky.channel_id, False, None
            else:
                channel_id, temporary, first = await self._channel_for(spec, bot, lease)
        except BaseException:
            if lease is not None:
                await lease.release()
            if sticky is not None:  # nothing posted: the conversation stays as it was
                await self.sticky.abandon(sticky)
            raise
        private = (temporary and first is not None) or (sticky is not None and self.settings.TEMP_CHANNEL_PRIVATE)
        try:
            if sticky is not None and not sticky.continuing:
                await self.sticky.opened(sticky, channel_id, coze_bot_id)
            if uploads:  # the CDP bot uploads them to the channel; their URLs go into the prompt
                spec = replace(spec, messages=await uploads.upload(self.rest, channel_id, spec.messages))
                prompt, prompt_tokens = await self._prompt_of(spec, max_tokens, coze_bot_id)
            message, account = await self._post_prompt(spec, prompt, channel_id, coze_bot_id, first=first,
                                                       private=private, client_gone=client_gone,
                                                       deadline=deadline, lease=lease)
        except BaseException as exc:
            if lease is not None:  # before a sticky restart below, which queues for an account again
                await lease.release()
            if sticky is not None:
                sticky.channel_id = channel_id
                await self.sticky.finish(sticky, None)
                if sticky.continuing and channel_gone(exc):  # deleted by hand, or to free slots
                    log.info("sticky conversation's channel is gone; starting again with the full history",
                             extra={"request_id": spec.request_id, "channel_id": channel_id})
                    return await self.start(replace(spec, messages=sticky.messages), client_gone)
            elif temporary:
                await release_channel(self.keeper, channel_id, spec.request_id)
            raise
        log.info("prompt posted", extra={"request_id": spec.request_id, "channel_id": channel_id,
                                         "prompt_message_id": message["id"], "account": account,
                                         "coze_bot_id": coze_bot_id})
        await self._record_prompt(message["id"], account, coze_bot_id, channel_id)
        return Conversation(spec, prompt, prompt_tokens, message["id"], channel_id, temporary, self,
                            account=account, coze_bot_id=coze_bot_id, sticky=sticky, lease=lease)

    async def _sticky_turn(self, spec: ChatSpec, bot: BotEntry) -> StickyTurn | None:
        """CONVERSATION_MODE=sticky: the conversation this request continues or opens (cdp.app.sticky),
        None in "fresh" mode and for requests that name a channel, post a raw prompt or use the tool/JSON
        protocol (each such prompt carries its schemas and rules, and the answer the client sees is not
        Coze's text, so the history would never match)."""
        s = self.settings
        if self.sticky is None or spec.channel_id or spec.raw_prompt is not None or s.DEFAULT_CHANNEL_ENABLE:
            return None
        if spec.emulation is not None and spec.emulation.active:
            return None
        sticky = await self.sticky.begin(request_id=spec.request_id, api_key=spec.api_key, model=spec.model,
                                         messages=spec.messages, name=spec.conversation,
                                         coze_bot_id=bot.coze_bot_id, request_seconds=self.request_seconds(spec))
        if sticky is not None and not sticky.continuing:
            await self.sticky.make_room()
        return sticky

    async def _record_prompt(self, prompt_id: str, account: str, coze_bot_id: str, channel_id: str) -> None:
        """Who posted the prompt (fingerprint only), so the replies-stream consumer can rest the right
        account/bot on a limit text even if the client has gone. Never fails the request."""
        if self.ledger is None:
            return
        try:
            await self.ledger.record(prompt_id, account, coze_bot_id, channel_id)
        except Exception:
            log.warning("could not record who posted the prompt", exc_info=True,
                        extra={"prompt_message_id": prompt_id, "account": account})

    async def _channel_for(self, spec: ChatSpec, bot: BotEntry,
                           lease: AccountLease | None = None) -> tuple[str, bool, tuple[str, str] | None]:
        """(channel id, temporary?, the account already picked for it or None). Channels named by the
        request or the configuration must be text channels or threads of GUILD_ID (checked once,
        cached). A private temporary channel needs its posting account first: it is picked here."""
        if spec.channel_id:
            await self.guild_channels.require(spec.channel_id)
            return spec.channel_id, False, None
        if self.settings.DEFAULT_CHANNEL_ENABLE:
            # As in the original: a bot_config entry's channelId is that bot's default channel.
            if bot.channel_id:
                await self.guild_channels.require(bot.channel_id, param=None,
                                                  what=f"channelId of bot '{bot.coze_bot_id}' in bot_config.json")
                return bot.channel_id, False, None
            await self.guild_channels.require(self.settings.CHANNEL_ID, param=None, what="CHANNEL_ID")
            return self.settings.CHANNEL_ID, False, None
        if not self.settings.TEMP_CHANNEL_PRIVATE:
            return await self.keeper.create(spec.request_id), True, None
        token, fp, user_id = await self._first_account(lease)
        channel_id = await self.keeper.create(spec.request_id, members=[user_id, bot.coze_bot_id])
        return channel_id, True, (token, fp)

    def request_seconds(self, spec: ChatSpec) -> float:
        """The request's own timeout: the `out-time` header, else REQUEST_OUT_TIME / STREAM_REQUEST_OUT_TIME."""
        if spec.timeout is not None:
            return spec.timeout
        s = self.settings
        return s.STREAM_REQUEST_OUT_TIME if spec.stream else s.REQUEST_OUT_TIME

    async def _acquire(self, tried: set[str], lease: AccountLease | None = None) -> tuple[str, str]:
        if lease is not None:  # the queue's slot: kept unless it failed for this request
            return await lease.acquire(tried)
        try:
            return await self.pool.acquire(tried)
        except NoUsableAccount as exc:
            raise se.unavailable(exc.message, exc.retry_after) from None

    async def _first_account(self, lease: AccountLease | None = None) -> tuple[str, str, str]:
        """(token, fingerprint, user id) of the account that will post into a new private channel; an
        account Discord refuses (401, must verify) is marked dead and the next one is tried."""
        tried: set[str] = set()
        while True:
            token, fp = await self._acquire(tried, lease)
            tried.add(fp)
            try:
                return token, fp, await self.account_user_id(token, fp)
            except (DiscordUnauthorized, DiscordVerificationRequired) as exc:
                await self.pool.mark_dead(fp, "401 unauthorized" if isinstance(exc, DiscordUnauthorized)
                                          else "account must be verified")
            except DiscordRateLimited as exc:
                raise se.unavailable("Discord is rate limiting this account; retry shortly.",
                                     int((exc.retry_after or 5) + 1), code="discord_rate_limited") from None
            except DiscordError as exc:
                raise se.upstream_error(f"Discord could not be asked who a user account is ({exc.status}, "
                                        f"code {exc.code}).") from None

    async def account_user_id(self, token: str, fp: str) -> str:
        """The account's Discord user id (GET /users/@me with its token, once per fingerprint)."""
        uid = self._user_ids.get(fp)
        if uid is None:
            uid = self._user_ids[fp] = str((await self.rest.get_current_user(token))["id"])
        return uid

    async def _grant(self, channel_id: str, user_id: str) -> None:
        """Let an account failed over to into the private channel (a bot call: its errors are the
        bot's, never the account's)."""
        try:
            await self.keeper.grant(channel_id, user_id)
        except DiscordNotFound:
            raise se.invalid_request(f"Channel {channel_id} does not exist or is not visible.",
                                     param="channelId") from None
        except DiscordError as exc:
            raise se.upstream_error(f"The CDP bot could not let the next user account into the private "
                                    f"channel ({exc.status}, code {exc.code}).") from None

    async def _post_prompt(self, spec: ChatSpec, prompt: str, channel_id: str, coze_bot_id: str, *,
                           first: tuple[str, str] | None = None, private: bool = False,
                           client_gone: Callable[[], Awaitable[bool]] | None = None,
                           deadline: float | None = None,
                           lease: AccountLease | None = None) -> tuple[dict, str]:
        """Post as a user account from the pool (`first`: the one already picked); (last message,
        account fingerprint).

        A 401 / "verify your account" before anything was posted marks the account dead and fails
        over to the next account within this request; in a `private` channel the bot first lets
        that account in. Before each part after the first, posting stops (a ServiceError, not
        retryable) once `client_gone()` says yes or `deadline` (event-loop time) has passed: the rest
        of a long prompt is not posted for nobody.
        """
        try:
            parts = split_within(prompt, coze_bot_id, self.settings.PROMPT_MAX_PARTS)
        except PromptError as exc:
            raise se.invalid_request(str(exc), param=exc.param, code=exc.code) from None
        loop = asyncio.get_running_loop()
        tried: set[str] = set()
        while True:
            if first is not None:
                (token, fp), first, granted = first, None, True
            else:
                token, fp = await self._acquire(tried, lease)
                granted = not private
            tried.add(fp)
            posted = 0
            try:
                if not granted:
                    await self._grant(channel_id, await self.account_user_id(token, fp))
                message: dict = {}
                for part in parts:
                    if posted:
                        await self._may_go_on(spec, loop, posted, len(parts), client_gone, deadline)
                    # A nonce per part: a retried send (timeout, 429, 5xx) returns the same message.
                    nonce = new_nonce()
                    try:
                        message = await self.rest.send_user_message(
                            token, channel_id, part, nonce=nonce, allowed_user_ids=[coze_bot_id])
                    except asyncio.CancelledError:  # cut while sending: it may have reached Discord
                        if spec.on_posted is not None:
                            spec.on_posted()
                        raise
                    if spec.on_posted is not None:
                        spec.on_posted()
                    posted += 1
                return message, fp
            except (DiscordUnauthorized, DiscordVerificationRequired) as exc:
                reason = "401 unauthorized" if isinstance(exc, DiscordUnauthorized) else \
                    "account must be verified"
                await self.pool.mark_dead(fp, reason)
                # part of the prompt is already posted, or may be (a retried send whose first attempt
                # failed ambiguously): failing over would post it twice
                if posted or exc.after_retry:
                    raise se.upstream_error("A Discord user account was refused mid-prompt.",
                                            retry=False) from None
            except DiscordNotFound:
                raise se.invalid_request(f"Channel {channel_id} does not exist or is not visible.",
                                         param="channelId") from None
            except DiscordRateLimited as exc:
                if posted or exc.after_retry:  # (maybe) partly posted: a retry would post it twice
                    raise se.upstream_error(f"Discord rate limited the account after {posted} of {len(parts)} "
                                            "parts of the prompt were posted; not retried, since a retry "
                                            "would post them again.", code="discord_rate_limited",
                                            retry=False) from None
                raise se.unavailable("Discord is rate limiting this account; retry shortly.",
                                     int((exc.retry_after or 5) + 1), code="discord_rate_limited") from None
            except DiscordError as exc:
                raise se.upstream_error(f"Discord refused the prompt ({exc.status}, code {exc.code}).",
                                        retry=False) from None

    @staticmethod
    async def _may_go_on(spec: ChatSpec, loop: asyncio.AbstractEventLoop, posted: int, total: int,
                         client_gone: Callable[[], Awaitable[bool]] | None, deadline: float | None) -> None:
        why = None
        if deadline is not None and loop.time() >= deadline:
            why = "the request's timeout passed"
        elif client_gone is not None and await client_gone():
            why = "the client went away"
        if why is not None:
            log.info("stopped posting a prompt", extra={"request_id": spec.request_id, "posted": posted,
                                                        "parts": total, "reason": why})
            raise se.upstream_error(f"Stopped posting the prompt after {posted} of {total} parts: {why}.",
                                    code="prompt_interrupted", retry=False)

    async def aclose(self) -> None:
        """Shutdown: the keeper finishes the deletions due now; later ones stay in the registry."""
        await self.keeper.aclose()
