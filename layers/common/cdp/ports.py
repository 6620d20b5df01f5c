"""Ports for every piece of state. The service and listener depend on these, never on an adapter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cdp.domain.accounts import HealthRecord
from cdp.domain.model import ReplyMessage, ReplySnapshot, TempChannel


@dataclass(frozen=True)
class UploadFile:
    """A file the Discord REST port uploads as a message attachment."""

    filename: str
    content: bytes
    content_type: str = "application/octet-stream"


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

    async def snapshot(self, prompt_id: str) -> ReplySnapshot: ...

    async def wait_for_change(self, prompt_id: str, revision: tuple, timeout: float) -> ReplySnapshot:
        """Return as soon as the snapshot's revision differs from `revision`, or after `timeout` seconds."""
        ...


class ChannelRegistry(Protocol):
    """Temporary channels, so a crash or restart never orphans one."""

    async def add(self, channel: TempChannel) -> None: ...

    async def schedule_delete(self, channel_id: str, delete_at: float) -> None: ...

    async def due(self, now: float, stale_before: float) -> list[TempChannel]:
        """Channels whose delete_at has passed, and in-use ones created before `stale_before`
        (a request that never ended: crashed process, cancelled stream)."""
        ...

    async def remove(self, channel_id: str) -> None: ...

    async def all(self) -> list[TempChannel]: ...


class ListenerPresence(Protocol):
    """Whether the gateway listener is connected, so idle completion is never decided on a gap."""

    async def stable_since(self) -> float | None:
        """Epoch seconds since the listener has been continuously connected; None while it is not."""
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


AccountStore = HealthStore  # the name used in the design notes


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

    async def record(self, prompt_id: str, account_fp: str, coze_bot_id: str, channel_id: str) -> None: ...

    async def lookup(self, prompt_id: str) -> dict | None:
        """{"account": fingerprint, "coze_bot_id": ..., "channel_id": ...} or None if unknown/expired."""
        ...
