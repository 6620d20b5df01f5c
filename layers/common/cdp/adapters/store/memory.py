"""In-memory adapters: the embedded default for `cdp serve` (API and listener in one process)."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import replace

from cdp.domain.accounts import Health, HealthRecord
from cdp.domain.model import ReplyMessage, ReplySnapshot, TempChannel
from cdp.domain.sticky import StickyConversation

# Bounded so a long-running server never grows without limit (the DynamoDB adapter uses TTL instead).
MAX_PROMPTS = 10_000


class MemoryReplyStore:
    """Replies of one process. A put wakes only the waiters of its own prompt (one future each,
    resolved at once: no polling, no lock, no wake-up of the other streams), and the prompt's
    snapshot is built once per change, not once per reader."""

    def __init__(self, max_prompts: int = MAX_PROMPTS) -> None:
        self._by_prompt: OrderedDict[str, dict[str, ReplyMessage]] = OrderedDict()
        self._snapshots: dict[str, ReplySnapshot] = {}  # cache, dropped by every change of the prompt
        self._reply_to_prompt: dict[str, str] = {}
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._max = max_prompts

    async def put(self, message: ReplyMessage) -> bool:
        pid = message.prompt_id
        parts = self._by_prompt.get(pid)
        if parts is None:
            parts = self._by_prompt[pid] = {}
            self._evict()
        current = parts.get(message.message_id)
        if current is not None and current.version > message.version:
            return False
        if current == message:
            return True
        parts[message.message_id] = message
        self._reply_to_prompt[message.message_id] = pid
        self._changed(pid)
        return True

    def _changed(self, pid: str) -> None:
        self._snapshots.pop(pid, None)
        for fut in self._waiters.pop(pid, ()):
            if not fut.done():
                fut.set_result(None)

    def _evict(self) -> None:
        while len(self._by_prompt) > self._max:
            pid, parts = self._by_prompt.popitem(last=False)
            self._changed(pid)  # its waiters see the (now empty) snapshot at once
            for mid in parts:
                self._reply_to_prompt.pop(mid, None)

    async def prompt_for_reply(self, message_id: str) -> str | None:
        return self._reply_to_prompt.get(message_id)

    def _snapshot(self, prompt_id: str) -> ReplySnapshot:
        snap = self._snapshots.get(prompt_id)
        if snap is None:
            parts = self._by_prompt.get(prompt_id)
            if not parts:
                return ReplySnapshot(prompt_id)
            snap = self._snapshots[prompt_id] = ReplySnapshot.of(prompt_id, list(parts.values()))
        return snap

    async def snapshot(self, prompt_id: str) -> ReplySnapshot:
        return self._snapshot(prompt_id)

    async def wait_for_change(self, prompt_id: str, revision: tuple, timeout: float) -> ReplySnapshot:
        snap = self._snapshot(prompt_id)
        if snap.revision != revision or timeout <= 0:
            return snap
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            fut: asyncio.Future[None] = loop.create_future()
            waiters = self._waiters.setdefault(prompt_id, set())
            waiters.add(fut)
            timer = loop.call_later(max(0.0, deadline - loop.time()), _wake, fut)
            try:
                await fut
            finally:
                timer.cancel()
                waiters.discard(fut)
                if not waiters and self._waiters.get(prompt_id) is waiters:
                    del self._waiters[prompt_id]
            snap = self._snapshot(prompt_id)
            if snap.revision != revision or loop.time() >= deadline:
                return snap


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class MemoryChannelRegistry:
    def __init__(self) -> None:
        self._channels: dict[str, TempChannel] = {}

    async def add(self, channel: TempChannel) -> None:
        self._channels[channel.channel_id] = channel

    async def schedule_delete(self, channel_id: str, delete_at: float) -> None:
        ch = self._channels.get(channel_id)
        if ch is not None:
            self._channels[channel_id] = TempChannel(
                ch.channel_id, ch.guild_id, ch.created_at, delete_at, ch.request_id, ch.extra
            )

    async def due(self, now: float, stale_before: float) -> list[TempChannel]:
        return [c for c in self._channels.values()
                if (c.delete_at is not None and c.delete_at <= now)
                or (c.delete_at is None and c.created_at <= stale_before)]

    async def remove(self, channel_id: str) -> None:
        self._channels.pop(channel_id, None)

    async def all(self) -> list[TempChannel]:
        return list(self._channels.values())


class MemoryHealthStore:
    """Account and bot health for a single process (`cdp serve` with the in-memory store)."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], HealthRecord] = {}

    async def load(self, kind: str) -> dict[str, HealthRecord]:
        return {k: r for (kd, k), r in self._records.items() if kd == kind}

    async def claim(self, kind: str, key: str, previous_last_used: float, now: float) -> bool:
        current = self._records.get((kind, key)) or HealthRecord(key)
        if current.last_used != previous_last_used:
            return False
        self._records[(kind, key)] = replace(current, last_used=now)
        return True

    async def save_health(self, kind: str, record: HealthRecord) -> None:
        current = self._records.get((kind, record.key)) or HealthRecord(record.key)
        if current.health == Health.DEAD and record.health != Health.DEAD:
            return
        self._records[(kind, record.key)] = replace(record, last_used=current.last_used)


# At most this many client keys are counted per window (one process, so far more than real clients);
# past it the key counted first in the window is forgotten (its count restarts): memory stays bounded.
RATE_LIMIT_MAX_KEYS = 200_000


class MemoryRateLimitStore:
    """Fixed-window counters, one dict per window number: a new window drops the older ones whole, so
    expiry costs O(1) per request (amortised) however many keys there are; never a scan per request."""

    def __init__(self, max_keys: int = RATE_LIMIT_MAX_KEYS) -> None:
        self.max_keys = max_keys
        self._windows: dict[int, dict[str, int]] = {}  # window -> key -> count; usually just the current

    def size(self) -> int:
        """Keys counted, over the windows held."""
        return sum(len(c) for c in self._windows.values())

    async def hit(self, key: str, window: int, ttl: float) -> int:
        counts = self._windows.get(window)
        if counts is None:
            # a window has begun: the older ones are over (a late request for one of them, that read the
            # clock just before the turn, gets a fresh dict, dropped when the next window begins)
            for w in [w for w in self._windows if w < window]:
                del self._windows[w]
            counts = self._windows[window] = {}
        n = counts.get(key, 0) + 1
        if n == 1 and len(counts) >= self.max_keys:
            del counts[next(iter(counts))]  # oldest key of this window (dicts keep insertion order)
        counts[key] = n
        return n


class MemoryAlertStore:
    def __init__(self) -> None:
        self._sent: dict[str, str] = {}

    async def claim(self, key: str, day: str) -> bool:
        if self._sent.get(key) == day:
            return False
        self._sent[key] = day
        return True

    async def release(self, key: str, day: str) -> None:
        if self._sent.get(key) == day:
            del self._sent[key]


class MemoryPromptLedger:
    """Prompt message id -> who posted it (bounded: the oldest entries are forgotten)."""

    def __init__(self, max_prompts: int = MAX_PROMPTS) -> None:
        self._entries: OrderedDict[str, dict] = OrderedDict()
        self._max = max_prompts

    async def record(self, prompt_id: str, account_fp: str, coze_bot_id: str, channel_id: str) -> None:
        self._entries[prompt_id] = {"account": account_fp, "coze_bot_id": coze_bot_id, "channel_id": channel_id}
        self._entries.move_to_end(prompt_id)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def lookup(self, prompt_id: str) -> dict | None:
        entry = self._entries.get(prompt_id)
        return dict(entry) if entry is not None else None


class MemoryConversationStore:
    """Sticky conversations of one process (CONVERSATION_MODE=sticky with the in-memory store). Bounded
    by the channel budget (each holds a channel); expired ones are dropped on the next put."""

    def __init__(self) -> None:
        self._items: dict[str, StickyConversation] = {}

    async def get(self, key: str) -> StickyConversation | None:
        return self._items.get(key)

    async def put(self, conversation: StickyConversation) -> None:
        now = time.time()  # expired idle ones go (their channels are the cleanup job's): stays small
        for key in [k for k, c in self._items.items() if c.expired(now) and not c.leased(now)]:
            del self._items[key]
        self._items[conversation.key] = conversation

    async def lease(self, key: str, owner: str, now: float, until: float) -> StickyConversation | None:
        current = self._items.get(key)  # no await between the check and the write: atomic in asyncio
        if current is None or current.expired(now) or current.leased(now):
            return None
        leased = self._items[key] = replace(current, lease_owner=owner, lease_until=until)
        return leased

    async def delete(self, key: str, owner: str | None = None) -> None:
        current = self._items.get(key)
        if current is not None and (owner is None or current.lease_owner == owner):
            del self._items[key]

    async def all(self) -> list[StickyConversation]:
        return list(self._items.values())
