"""Ports: every interface the use cases need (Discord REST, state stores, blobs) and the `Stores`
bundle. The app and the listener depend on these, never on an adapter; adapters implement them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cdp.domain.accounts import HealthRecord
from cdp.domain.fairness import TakeDecision
from cdp.domain.model import ReplyMessage, ReplySnapshot, TempChannel
from cdp.domain.sticky import StickyConversation


@dataclass(frozen=True)
class UploadFile:
    """A file the Discord REST port uploads as a message attachment."""

    filename: str
    content: bytes
    content_type: str = "application/octet-stream"


class DiscordRestPort(Protocol):
    """The Discord HTTP API (cdp.adapters.discord.rest.DiscordRest): bot-token calls unless a user token
    is given. Answers are Discord's JSON objects; failures raise cdp.domain.discord.DiscordError."""

    async def get_current_user(self, user_token: str | None = None) -> dict:
        """The bot's own user, or the user of `user_token` (checks a token)."""
        ...

    async def get_application(self) -> dict:
        """The bot's application (flags, verify_key)."""
        ...

    async def get_guild(self, guild_id: str) -> dict: ...

    async def list_guild_channels(self, guild_id: str) -> list[dict]: ...

    async def get_guild_member(self, guild_id: str, user_id: str) -> dict: ...

    async def get_channel(self, channel_id: str) -> dict:
        """The channel object (its guild_id and type): DiscordNotFound for unknown ids, DiscordForbidden
        for channels the bot cannot see (other servers, DMs, private channels)."""
        ...

    async def create_channel(self, guild_id: str, name: str, type: int = 0, parent_id: str | None = None,
                             permission_overwrites: Sequence[dict] | None = None) -> dict:
        """A channel of the guild; `permission_overwrites` (Discord's overwrite objects) make it private."""
        ...

    async def set_channel_permission(self, channel_id: str, overwrite_id: str, allow: int, deny: int = 0,
                                     type: int = 1) -> None:
        """Add or replace one permission overwrite of a channel (type 1 = a member, 0 = a role)."""
        ...

    async def delete_channel(self, channel_id: str) -> dict: ...

    async def create_thread(self, channel_id: str, name: str, auto_archive_duration: int,
                            message_id: str | None = None, type: int = 11) -> dict:
        """A thread on message `message_id`, or a standalone thread of `type` in the channel."""
        ...

    async def get_messages(self, channel_id: str, limit: int = 50, after: str | None = None,
                           before: str | None = None) -> list[dict]:
        """Up to `limit` (1-100) recent messages of the channel, newest first."""
        ...

    async def send_bot_message(self, channel_id: str, content: str | None = None,
                               files: Sequence[UploadFile] = ()) -> dict:
        """Post as the bot (no mentions parsed): text and/or attachments."""
        ...

    async def send_user_message(self, user_token: str, channel_id: str, content: str, *, nonce: str,
                                allowed_user_ids: Sequence[str], files: Sequence[UploadFile] = ()) -> dict:
        """Post `content` as the Discord user; idempotent per `nonce`, so a retry never posts twice."""
        ...

    async def put_application_commands(self, application_id: str, commands: list[dict],
                                       guild_id: str | None = None) -> list[dict]:
        """Bulk-overwrite the application's slash commands: in one guild, or global."""
        ...

    async def edit_original_interaction_response(self, application_id: str, interaction_token: str,
                                                 body: dict) -> dict:
        """Fill in the deferred answer to an interaction (valid 15 minutes)."""
        ...

    async def aclose(self) -> None:
        """Close the connection pool."""
        ...


class ReplyStore(Protocol):
    """Coze replies keyed by the prompt message id. Written by the listener, read by the answering side."""

    async def put(self, message: ReplyMessage) -> bool:
        """Store `message` unless a newer version of it is already stored. Returns True if written.

        Idempotent: equal versions overwrite (same data), older versions are ignored, so duplicate,
        reordered and doubled (two listeners) events are harmless.
        """
        ...

    async def prompt_for_reply(self, message_id: str) -> str | None:
        """Prompt id that reply message `message_id` belongs to (partial MESSAGE_UPDATEs omit it)."""
        ...

    async def snapshot(self, prompt_id: str) -> ReplySnapshot:
        """Every reply message stored for the prompt so far."""
        ...

    async def wait_for_change(self, prompt_id: str, revision: tuple, timeout: float) -> ReplySnapshot:
        """Return as soon as the snapshot's revision differs from `revision`, or after `timeout` seconds."""
        ...


class ChannelRegistry(Protocol):
    """Temporary channels, so a crash or restart never orphans one."""

    async def add(self, channel: TempChannel) -> None:
        """Register a channel just created (in use: no delete_at yet)."""
        ...

    async def schedule_delete(self, channel_id: str, delete_at: float) -> None:
        """The request is over: delete the channel at `delete_at` (epoch s). Unknown channels are ignored."""
        ...

    async def due(self, now: float, stale_before: float) -> list[TempChannel]:
        """Channels whose delete_at has passed, and in-use ones created before `stale_before`
        (a request that never ended: crashed process, cancelled stream)."""
        ...

    async def remove(self, channel_id: str) -> None:
        """Forget a channel (it was deleted)."""
        ...

    async def all(self) -> list[TempChannel]:
        """Every registered channel."""
        ...


class ListenerPresence(Protocol):
    """Whether the gateway listener is connected, so idle completion is never decided on a gap.

    The listener process publishes its state; the answering side reads it."""

    async def publish(self, ready: bool, since: float) -> None:
        """Record this listener's state: connected (`ready`) since epoch seconds `since`. Called on every
        change and as a heartbeat; a listener that stops publishing counts as gone."""
        ...

    async def stable_since(self) -> float | None:
        """Epoch seconds since a listener has been continuously connected; None while none is."""
        ...


class HealthStore(Protocol):
    """Health of accounts (key = token fingerprint) and bots (key = Coze bot id), shared by every
    process and kept across restarts. `kind` is cdp.domain.accounts.KIND_ACCOUNT or KIND_BOT."""

    async def load(self, kind: str) -> dict[str, HealthRecord]:
        """Every stored record of this kind, by key (keys never stored are simply absent)."""
        ...

    async def claim(self, kind: str, key: str, previous_last_used: float, now: float) -> bool:
        """Set last_used = now if it is still `previous_last_used` (0 = never used / absent).

        False when another request claimed it first: the caller reloads and picks again, so two
        processes never hand the same least-recently-used account to two requests at once.
        """
        ...

    async def save_health(self, kind: str, record: HealthRecord) -> None:
        """Store the health fields of `record` (health, resting_until, dead_since, reason), keeping
        last_used; a dead record is never overwritten by a non-dead one."""
        ...


class LeaseStore(Protocol):
    """Per-account slots of prompts in flight (ACCOUNT_MAX_CONCURRENT) and the time of its last post
    (ACCOUNT_MIN_GAP), shared by every process; the rules are cdp.domain.fairness.decide_take."""

    async def take(self, account: str, holder: str, now: float, *, max_concurrent: int, min_gap: float,
                   ttl: float) -> TakeDecision:
        """Atomically take a free slot of `account` for `holder` until `now + ttl` and record `now` as
        its last post, if `decide_take` allows it (the decision's `at`: the time recorded, `now` or later);
        else the decision says when to try again."""
        ...

    async def release(self, account: str, slot: int, holder: str) -> None:
        """Free the slot if `holder` still holds it (an expired, retaken slot is left alone)."""
        ...

    async def renew(self, account: str, slot: int, holder: str, expires_at: float) -> bool:
        """Hold the slot until `expires_at` if `holder` still holds it (a reply still streaming past
        its lease's ttl); False if it does not (it expired and was retaken)."""
        ...


class RateLimitStore(Protocol):
    """Fixed-window request counters (REQUEST_RATE_LIMIT per client IP)."""

    async def hit(self, key: str, window: int, ttl: float) -> int:
        """Count one request for `key` in window number `window`; returns the count including it."""
        ...


class AlertStore(Protocol):
    """Dedupe of alerts: at most one per (kind, day)."""

    async def claim(self, key: str, day: str) -> bool:
        """True if no alert for `key` was sent on `day` yet (and records it), else False."""
        ...

    async def release(self, key: str, day: str) -> None:
        """Undo a claim whose alert could not be sent, so a later one may try again."""
        ...


class PromptLedger(Protocol):
    """Who posted each prompt: prompt message id -> account fingerprint, Coze bot id, channel id.

    Written by the answering side right after posting; read by the replies-stream consumer so it can
    rest the right account/bot on a limit text even after the client has gone. Never holds a token.
    """

    async def record(self, prompt_id: str, account_fp: str, coze_bot_id: str, channel_id: str) -> None:
        """Remember who posted `prompt_id` (kept about two days)."""
        ...

    async def lookup(self, prompt_id: str) -> dict | None:
        """{"account": fingerprint, "coze_bot_id": ..., "channel_id": ...} or None if unknown/expired."""
        ...


class ConversationStore(Protocol):
    """Sticky conversations (CONVERSATION_MODE=sticky): key -> channel, fingerprint, last use, lease.
    Readers treat an expired conversation (expires_at passed) as absent."""

    async def get(self, key: str) -> StickyConversation | None:
        """The conversation stored under `key` (strongly consistent), expired or not; None if absent."""
        ...

    async def put(self, conversation: StickyConversation) -> None:
        """Store (or replace) the conversation under its key."""
        ...

    async def lease(self, key: str, owner: str, now: float, until: float) -> StickyConversation | None:
        """Lease the conversation to request `owner` until `until` if it exists, has not expired and no
        other lease runs at `now`; the leased conversation, or None (absent, expired or busy). Atomic:
        of two requests, one gets it."""
        ...

    async def delete(self, key: str, owner: str | None = None) -> None:
        """Forget the conversation (if `owner`: only while that request still holds its lease)."""
        ...

    async def all(self) -> list[StickyConversation]:
        """Every stored conversation (for the channel budget: at most a few hundred)."""
        ...


class Notifier(Protocol):
    """Where operator alerts go (cdp.adapters.telegram)."""

    @property
    def enabled(self) -> bool:
        """False when not configured: alerts are then dropped silently."""
        ...

    async def send(self, text: str, key: str) -> bool:
        """Deliver `text`; True if accepted. Never raises (`key` names the alert in logs)."""
        ...


class BlobStoreError(RuntimeError):
    """The blob store could not be reached or refused the operation (message safe to show)."""


class BlobStore(Protocol):
    """Re-hosted images (Coze's pictures), kept after Discord forgets them (cdp.adapters.blobs)."""

    async def put(self, data: bytes, content_type: str) -> str:
        """Store `data`; return its URL (absolute, or a "/files/<name>" path served by the API)."""
        ...

    async def prune(self, older_than: float) -> int:
        """Delete blobs written before `older_than` (epoch seconds); how many were deleted."""
        ...

    async def get(self, name: str) -> tuple[bytes, str] | None:
        """(bytes, content type) of a stored blob, or None (missing, or a name the store never makes)."""
        ...


@dataclass
class Stores:
    """The state stores of one process (cdp.entry.bootstrap.make_stores builds them)."""

    replies: ReplyStore
    channels: ChannelRegistry
    presence: ListenerPresence | None = None  # shared stores: the external listener's heartbeat
    health: HealthStore | None = None  # account and bot health (cdp.app.pool); None = in-memory
    ratelimits: RateLimitStore | None = None  # REQUEST_RATE_LIMIT counters; None = in-memory
    alerts: AlertStore | None = None  # alert dedupe; None = in-memory
    ledger: PromptLedger | None = None  # prompt id -> account fingerprint/bot (replies-stream cooldowns)
    blobs: BlobStore | None = None  # re-hosted images (the cleanup job prunes old ones)
    leases: LeaseStore | None = None  # account slots and post gaps (cdp.app.queue); None = in-memory
    conversations: ConversationStore | None = None  # sticky conversations (CONVERSATION_MODE=sticky)


class Metrics(Protocol):
    """Counters, gauges and histograms named in cdp.domain.metrics.CATALOGUE (Prometheus in `cdp serve`,
    CloudWatch EMF on Lambda). Never raises: metrics must not fail a request."""

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        """Add to a counter or gauge."""

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set a gauge."""

    def observe(self, name: str, value: float, **labels: str) -> None:
        """Record one value of a histogram."""


class NoMetrics:
    """The default: records nothing."""

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        pass

    def set(self, name: str, value: float, **labels: str) -> None:
        pass

    def observe(self, name: str, value: float, **labels: str) -> None:
        pass


NO_METRICS: Metrics = NoMetrics()
