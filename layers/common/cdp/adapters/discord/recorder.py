"""Coze replies from gateway dispatches: raw MESSAGE_CREATE / MESSAGE_UPDATE data -> ReplyMessage ->
ReplyStore. Partial updates are merged onto the last full state; a reply never moves backwards.

A failed store write (DynamoDB throttling, 5xx, a timeout) is retried with a jittered, capped
exponential backoff until it succeeds or a newer version of the same message supersedes it: an edit
is never dropped. The writes of one prompt's reply go one at a time in the order they were made (a
retry holds its prompt's lane), so a reader never sees a later message of a reply before an earlier
message's last edit. Every attempt is reported to `health` (the listener's GatewayStatus), which
turns unhealthy after UNHEALTHY_AFTER consecutive failures and healthy again on the next success.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Protocol

from cdp.domain.metrics import LISTENER_WRITES
from cdp.domain.model import ReplyMessage
from cdp.domain.reply import merge_message, to_reply_message, version_of
from cdp.ports import NO_METRICS, Metrics, ReplyStore

log = logging.getLogger("cdp.adapters.discord.recorder")

RETRY_BASE = 0.1  # seconds before the first retry of a failed store write
RETRY_CAP = 5.0  # the longest wait between two attempts


class WriteHealth(Protocol):
    """Told the outcome of every store write attempt (GatewayStatus implements it)."""

    def store_write_failed(self, error: str) -> None: ...

    def store_write_succeeded(self) -> None: ...


def backoff(attempt: int, base: float = RETRY_BASE, cap: float = RETRY_CAP) -> float:
    """Wait before retry number `attempt` (1, 2...): "equal jitter", between half and all of
    min(cap, base * 2^(attempt-1)), so retries of many writes do not hit the store in step."""
    ceiling = min(cap, base * (2 ** min(attempt - 1, 30)))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


@dataclass(slots=True)
class _Lane:
    """The writes of one prompt's reply: one at a time, in call order; a version superseded while
    it waited (or while it was being retried) is skipped, the newer version is written instead."""

    lock: asyncio.Lock
    newest: dict[str, int]  # message id -> newest version made
    users: int = 0


@dataclass(slots=True)
class _Seen:
    raw: dict
    version: int
    prompt_id: str


# The fields of a message object that to_reply_message reads. The cache keeps only these: a Coze
# reply's payload also carries member objects, mentions and the whole prompt it answers
# (referenced_message, up to 2000 characters with its own embeds), kilobytes per cached reply.
_KEPT = ("id", "channel_id", "author", "content", "timestamp", "edited_timestamp", "embeds", "attachments",
         "components", "message_reference", "referenced_message")


def _slim(raw: dict) -> dict:
    """`raw` reduced to what to_reply_message reads (same result for it, less memory in the cache)."""
    out = {k: raw[k] for k in _KEPT if k in raw}
    author = out.get("author")
    if isinstance(author, dict):
        out["author"] = {k: author[k] for k in ("id",) if k in author}
    referenced = out.get("referenced_message")
    if isinstance(referenced, dict):
        out["referenced_message"] = {k: referenced[k] for k in ("id",) if k in referenced}
    return out


def _raw_from_reply(m: ReplyMessage) -> dict:
    """A message object equivalent (for to_reply_message) to a stored ReplyMessage."""
    raw: dict[str, Any] = {
        "id": m.message_id,
        "channel_id": m.channel_id,
        "author": {"id": m.author_id, "bot": True},
        "content": m.content,
        "message_reference": {"message_id": m.prompt_id, "channel_id": m.channel_id},
        "embeds": [{"image": {"url": u}} for u in m.image_urls],
        "attachments": [],
        "components": [],
    }
    if m.has_components:
        raw["components"] = [
            {"type": 1, "components": [{"type": 2, "style": 2, "label": s} for s in m.suggestions]}
        ]
    return raw


class ReplyRecorder:
    """Raw MESSAGE_CREATE / MESSAGE_UPDATE data -> ReplyStore.put (Coze bots' replies only)."""

    def __init__(
        self,
        store: ReplyStore,
        coze_bot_ids: set[str],
        guild_id: str | None = None,
        *,
        max_cached: int = 5000,
        health: WriteHealth | None = None,
        retry_base: float = RETRY_BASE,
        retry_cap: float = RETRY_CAP,
    ) -> None:
        self.store = store
        self.coze_bot_ids = {str(i) for i in coze_bot_ids}
        self.guild_id = str(guild_id) if guild_id else None
        self.max_cached = max_cached
        self._seen: OrderedDict[str, _Seen] = OrderedDict()
        self._lock = asyncio.Lock()
        self.health = health
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self._lanes: dict[str, _Lane] = {}  # prompt id -> its writes in flight
        self.recorded = 0
        self.ignored = 0
        self.superseded = 0  # writes skipped because a newer version of the message came
        self.write_failures = 0  # failed write attempts (each was retried)
        self.metrics: Metrics = NO_METRICS  # the edge sets its own (Prometheus in `cdp serve`, EMF on ECS)

    async def on_message_create(self, payload: dict) -> None:
        await self._handle(payload)

    async def on_message_update(self, payload: dict) -> None:
        await self._handle(payload)

    async def _handle(self, payload: dict) -> None:
        if not isinstance(payload, dict) or not payload.get("id"):
            return
        mid = str(payload["id"])
        gid = payload.get("guild_id")
        if self.guild_id and gid and str(gid) != self.guild_id:
            self.ignored += 1
            return
        author = payload.get("author")
        if (
            isinstance(author, dict)
            and author.get("id") is not None
            and str(author["id"]) not in self.coze_bot_ids
        ):
            self.ignored += 1
            return
        async with self._lock:  # events of one message are applied in arrival order
            msg = await self._merge(mid, payload)
            if msg is None:
                return
            # Join the prompt's lane before the next event can be merged: lanes keep merge order.
            lane = self._lanes.get(msg.prompt_id)
            if lane is None:
                lane = self._lanes[msg.prompt_id] = _Lane(asyncio.Lock(), {})
            lane.newest[mid] = max(lane.newest.get(mid, msg.version), msg.version)
            lane.users += 1
        try:
            async with lane.lock:
                if await self._write(msg, lane):
                    self.recorded += 1
        finally:
            lane.users -= 1
            if not lane.users:
                self._lanes.pop(msg.prompt_id, None)

    async def _retrying(self, read, key: str):
        """`await read(key)`, retried like a write until it answers (a partial update of a message
        no longer cached needs its stored state: without it the edit would be lost)."""
        attempt = 0
        while True:
            try:
                result = await read(key)
            except Exception as exc:
                attempt += 1
                error = f"{type(exc).__name__}: {exc}"[:300]
                if self.health is not None:
                    self.health.store_write_failed(error)
                delay = backoff(attempt, self.retry_base, self.retry_cap)
                log.warning("store read failed; retrying in %.2fs", delay,
                            extra={"key": key, "attempt": attempt, "error": error})
                await asyncio.sleep(delay)
                continue
            if attempt and self.health is not None:
                self.health.store_write_succeeded()
            return result

    async def _write(self, msg: ReplyMessage, lane: _Lane) -> bool:
        """store.put(msg) until it succeeds (True) or a newer version of the message supersedes it
        (False). Cancellation (the listener stopping) is the only other way out."""
        attempt = 0
        while True:
            if msg.version < lane.newest[msg.message_id]:
                self.superseded += 1
                self.metrics.inc(LISTENER_WRITES, outcome="superseded")
                return False
            try:
                await self.store.put(msg)
            except Exception as exc:
                attempt += 1
                self.write_failures += 1
                self.metrics.inc(LISTENER_WRITES, outcome="failed")
                error = f"{type(exc).__name__}: {exc}"[:300]
                if self.health is not None:
                    self.health.store_write_failed(error)
                delay = backoff(attempt, self.retry_base, self.retry_cap)
                log.warning("store write failed; retrying in %.2fs", delay,
                            extra={"message_id": msg.message_id, "prompt_id": msg.prompt_id,
                                   "version": msg.version, "attempt": attempt, "error": error})
                await asyncio.sleep(delay)
                continue
            self.metrics.inc(LISTENER_WRITES, outcome="written")
            if self.health is not None:
                self.health.store_write_succeeded()
            if attempt:
                log.info("store write succeeded after %d failed attempts", attempt,
                         extra={"message_id": msg.message_id, "prompt_id": msg.prompt_id})
            return True

    async def _merge(self, mid: str, payload: dict) -> ReplyMessage | None:
        seen = self._seen.get(mid)
        prompt_id: str | None = seen.prompt_id if seen else None
        base: dict | None = seen.raw if seen else None
        prev_version: int | None = seen.version if seen else None
        has_ref = isinstance(payload.get("message_reference"), dict) or isinstance(
            payload.get("referenced_message"), dict
        )
        if seen is None and not has_ref:
            # a partial update of a message we no longer (or never) had in memory
            prompt_id = await self._retrying(self.store.prompt_for_reply, mid)
            if prompt_id is None:
                self.ignored += 1
                return None
            snap = await self._retrying(self.store.snapshot, prompt_id)
            stored = next((m for m in snap.messages if m.message_id == mid), None)
            if stored is not None:
                base = _raw_from_reply(stored)
                prev_version = stored.version

        incoming = version_of(payload)
        if prev_version is not None and incoming is not None and incoming < prev_version:
            return None  # stale (late, out-of-order) event: never move a reply backwards

        merged = merge_message(base, payload)
        msg = to_reply_message(merged, self.coze_bot_ids, prompt_id=prompt_id, fallback_version=prev_version)
        if msg is None:
            self.ignored += 1
            return None
        if prev_version is not None and incoming is None:
            # An update without timestamps (partial: only embeds / components...) has no version of
            # its own: keep the previous one if nothing changed, else move it by 1 µs (an equal-version
            # overwrite would not change the snapshot's revision, so waiters would miss the new data).
            prev_msg = None
            if seen is not None:
                prev_msg = to_reply_message(
                    seen.raw, self.coze_bot_ids, prompt_id=seen.prompt_id, fallback_version=seen.version
                )
            elif base is not None:
                prev_msg = to_reply_message(base, self.coze_bot_ids, prompt_id=prompt_id, fallback_version=0)
            changed = prev_msg is None or replace(prev_msg, version=0) != replace(msg, version=0)
            msg = replace(msg, version=prev_version + 1 if changed else prev_version)
        self._seen[mid] = _Seen(_slim(merged), msg.version, msg.prompt_id)
        self._seen.move_to_end(mid)
        while len(self._seen) > self.max_cached:
            self._seen.popitem(last=False)
        return msg
