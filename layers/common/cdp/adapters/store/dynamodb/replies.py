"""DynamoDB reply store and temporary-channel registry (`CDP_STORE=dynamodb`).

Two tables (template.yaml defines them; tests create them from that very definition):

replies  pk = prompt message id, sk = reply message id   one item per Coze reply message (kind=part)
         pk = "reply#<message id>", sk = "prompt"        pointer used by `prompt_for_reply`
         Streams NEW_IMAGE (consumer: functions/replies_stream); TTL attribute `expires_at` (~1 day).
state    pk/sk generic: pk = "channel", sk = channel id  temporary-channel registry (removed when deleted);
         the other state items: cdp.adapters.store.dynamodb.state.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict

from cdp.adapters.store.dynamodb.client import TableAdapter, number, number_of, string, strings
from cdp.adapters.store.dynamodb.rhythm import Rhythm
from cdp.domain.model import ReplyMessage, ReplySnapshot, TempChannel
from cdp.settings import Settings

CHANNEL_TTL_SECONDS = 30 * 24 * 3600  # a safety net only: entries are removed when the channel is deleted
KIND_PART = "part"
KIND_POINTER = "pointer"
CHANNEL_PK = "channel"

def reply_item(message: ReplyMessage, expires_at: int) -> dict:
    return {
        "pk": string(message.prompt_id), "sk": string(message.message_id), "kind": string(KIND_PART),
        "channel_id": string(message.channel_id), "author_id": string(message.author_id),
        "content": string(message.content), "version": number(message.version),
        "image_urls": strings(message.image_urls), "suggestions": strings(message.suggestions),
        "has_components": {"BOOL": bool(message.has_components)},
        "updated_at": number(round(time.time(), 3)), "expires_at": number(expires_at),
    }


def reply_from_item(item: dict) -> ReplyMessage:
    """Inverse of `reply_item`; also used on DynamoDB stream images (same wire format)."""
    return ReplyMessage(
        message_id=item["sk"]["S"], prompt_id=item["pk"]["S"],
        channel_id=item.get("channel_id", {}).get("S", ""), author_id=item.get("author_id", {}).get("S", ""),
        content=item.get("content", {}).get("S", ""), version=int(item["version"]["N"]),
        image_urls=tuple(v["S"] for v in item.get("image_urls", {}).get("L", [])),
        suggestions=tuple(v["S"] for v in item.get("suggestions", {}).get("L", [])),
        has_components=bool(item.get("has_components", {}).get("BOOL", False)),
    )


def channel_item(ch: TempChannel) -> dict:
    item = {"pk": string(CHANNEL_PK), "sk": string(ch.channel_id), "guild_id": string(ch.guild_id),
            "created_at": number(ch.created_at), "request_id": string(ch.request_id),
            "extra": string(json.dumps(ch.extra, separators=(",", ":"), default=str)),
            "expires_at": number(int(ch.created_at) + CHANNEL_TTL_SECONDS)}
    if ch.delete_at is not None:
        item["delete_at"] = number(ch.delete_at)
    return item


def channel_from_item(item: dict) -> TempChannel:
    delete_at = item.get("delete_at")
    return TempChannel(
        channel_id=item["sk"]["S"], guild_id=item.get("guild_id", {}).get("S", ""),
        created_at=float(item["created_at"]["N"]),
        delete_at=float(delete_at["N"]) if delete_at and "N" in delete_at else None,
        request_id=item.get("request_id", {}).get("S", ""),
        extra=json.loads(item.get("extra", {}).get("S") or "{}"),
    )


class _Lru(OrderedDict):
    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = size

    def put(self, key, value) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self._size:
            self.popitem(last=False)


class DynamoReplyStore(TableAdapter):
    """ReplyStore on the replies table."""

    REPLIES_TABLE = True

    def __init__(self, settings: Settings | None = None, client=None) -> None:
        super().__init__(settings, client)
        # What this process last wrote / learnt: saves writes for duplicates and reads for pointers.
        self._written: _Lru = _Lru(20_000)  # message id -> ReplyMessage
        self._pointers: _Lru = _Lru(20_000)  # message id -> prompt id
        self._rhythms: _Lru = _Lru(5_000)  # prompt id -> Rhythm (when to read it again)

    async def put(self, message: ReplyMessage) -> bool:
        """One version of a reply message (a conditional write: never an older version over a newer
        one). The order of one prompt's writes is the recorder's (its per-prompt lane,
        cdp.adapters.discord.recorder); writes of different prompts run concurrently."""
        known = self._written.get(message.message_id)
        if known is not None:
            if known.version > message.version:
                return False  # the table holds at least `known`: the condition would refuse it anyway
            if known == message:
                return True  # same data already stored
        expires_at = int(time.time()) + self.settings.CDP_REPLY_TTL_SECONDS
        part = self.write_if(
            self.client.put_item, Item=reply_item(message, expires_at),
            ConditionExpression="attribute_not_exists(pk) OR version <= :v",
            ExpressionAttributeValues={":v": number(message.version)})
        if self._pointers.get(message.message_id) == message.prompt_id:
            written = await part
        else:  # first write of this message: its pointer goes in parallel (one round trip, not two)
            written, pointer = await asyncio.gather(part, self.write(
                self.client.put_item,
                Item={"pk": string(f"reply#{message.message_id}"), "sk": string("prompt"),
                      "kind": string(KIND_POINTER), "prompt_id": string(message.prompt_id),
                      "expires_at": number(expires_at)}), return_exceptions=True)
            # The pointer is cached only once DynamoDB took it: a failed one is written again when
            # the caller (the listener's recorder) retries this put.
            if not isinstance(pointer, BaseException):
                self._pointers.put(message.message_id, message.prompt_id)
            for outcome in (written, pointer):
                if isinstance(outcome, BaseException):
                    raise outcome
        if written is None:
            return False
        self._written.put(message.message_id, message)
        return True

    async def prompt_for_reply(self, message_id: str) -> str | None:
        cached = self._pointers.get(message_id)
        if cached is not None:
            return cached
        resp = await self.read(self.client.get_item, ConsistentRead=True,
                               Key={"pk": string(f"reply#{message_id}"), "sk": string("prompt")})
        item = resp.get("Item")
        if not item:
            return None
        prompt_id = item["prompt_id"]["S"]
        self._pointers.put(message_id, prompt_id)
        return prompt_id

    async def read_reply(self, prompt_id: str) -> tuple[ReplySnapshot, float | None]:
        """The snapshot, and the newest item's `updated_at` (the listener's clock; None: no item)."""
        parts = [i for i in await self.partition(prompt_id) if i.get("kind", {}).get("S", KIND_PART) == KIND_PART]
        newest = max((number_of(i, "updated_at") or 0.0 for i in parts), default=None)
        return ReplySnapshot.of(prompt_id, [reply_from_item(i) for i in parts]), newest

    async def snapshot(self, prompt_id: str) -> ReplySnapshot:
        return (await self.read_reply(prompt_id))[0]

    def rhythm(self, prompt_id: str) -> Rhythm:
        """The polling state of a prompt, kept across calls of wait_for_change (cdp.adapters.store.dynamodb.rhythm)."""
        rhythm = self._rhythms.get(prompt_id)
        if rhythm is None:
            rhythm = Rhythm(since=time.time())
            self._rhythms.put(prompt_id, rhythm)
        return rhythm

    async def wait_for_change(self, prompt_id: str, revision: tuple, timeout: float) -> ReplySnapshot:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        rhythm = self.rhythm(prompt_id)
        while True:
            snap, newest = await self.read_reply(prompt_id)
            rhythm.observe(newest, time.time())
            if snap.revision != revision:
                return snap
            remaining = deadline - loop.time()
            if remaining <= 0:
                return snap
            await asyncio.sleep(min(rhythm.delay(time.time()), remaining))


class DynamoChannelRegistry(TableAdapter):
    """ChannelRegistry on the state table (pk "channel")."""

    async def add(self, channel: TempChannel) -> None:
        await self.write(self.client.put_item, Item=channel_item(channel))

    async def _set_delete_at(self, channel_id: str, delete_at: float, only_if_unscheduled: bool) -> bool:
        cond = "attribute_exists(pk)"
        if only_if_unscheduled:
            cond += " AND attribute_not_exists(delete_at)"
        written = await self.write_if(  # None: not registered (or already scheduled), nothing to do
            self.client.update_item, Key={"pk": string(CHANNEL_PK), "sk": string(channel_id)},
            UpdateExpression="SET delete_at = :d", ConditionExpression=cond,
            ExpressionAttributeValues={":d": number(delete_at)})
        return written is not None

    async def schedule_delete(self, channel_id: str, delete_at: float) -> None:
        await self._set_delete_at(channel_id, delete_at, only_if_unscheduled=False)

    async def schedule_delete_if_in_use(self, channel_id: str, delete_at: float) -> bool:
        """Used by the replies-stream consumer: never postpones a deletion the API already scheduled."""
        return await self._set_delete_at(channel_id, delete_at, only_if_unscheduled=True)

    async def all(self) -> list[TempChannel]:
        return [channel_from_item(i) for i in await self.partition(CHANNEL_PK)]

    async def due(self, now: float, stale_before: float) -> list[TempChannel]:
        return [c for c in await self.all()
                if (c.delete_at is not None and c.delete_at <= now)
                or (c.delete_at is None and c.created_at <= stale_before)]

    async def remove(self, channel_id: str) -> None:
        await self.write(self.client.delete_item, Key={"pk": string(CHANNEL_PK), "sk": string(channel_id)})
