"""DynamoDB adapters for the store ports (`CDP_STORE=dynamodb`).

Two tables (template.yaml defines them; tests create them from that very definition):

replies  pk = prompt message id, sk = reply message id   one item per Coze reply message (kind=part)
         pk = "reply#<message id>", sk = "prompt"        pointer used by `prompt_for_reply`
         Streams NEW_IMAGE (consumer: functions/replies_stream); TTL attribute `expires_at` (~1 day).
state    pk/sk generic: pk = "channel", sk = channel id  temporary-channel registry (removed when deleted)
         later: account health, rate-limit counters (pk = "account" / "ratelimit#…").

The endpoint comes from AWS_ENDPOINT_URL_DYNAMODB / AWS_ENDPOINT_URL (boto3 honours both natively;
they are also read here so a `.env` file works), so moto, DynamoDB Local and LocalStack work.

boto3 is imported lazily (it is the biggest import of the layer and Lambdas that never touch
DynamoDB should not pay for it). One client per process (botocore clients are thread-safe), called
from a small dedicated thread pool.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from cdp.domain.model import ReplyMessage, ReplySnapshot, TempChannel

REPLY_TTL_SECONDS = 24 * 3600
CHANNEL_TTL_SECONDS = 30 * 24 * 3600  # a safety net only: entries are removed when the channel is deleted
KIND_PART = "part"
KIND_POINTER = "pointer"
CHANNEL_PK = "channel"

# wait_for_change polling: fast right after a change, backing off while nothing changes.
POLL_FAST = 0.12
POLL_SLOW = 1.0
POLL_BACKOFF_PER_SECOND = 0.3  # interval grows by this much per second without a change


class DynamoSettings(BaseSettings):
    """Table names and endpoint; the rest of the settings live in cdp.settings."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore",
                                      case_sensitive=True)

    CDP_TABLE_PREFIX: str = "cdp"
    CDP_REPLIES_TABLE: str = ""
    CDP_STATE_TABLE: str = ""
    CDP_REPLY_TTL_SECONDS: int = REPLY_TTL_SECONDS
    AWS_ENDPOINT_URL_DYNAMODB: str = ""
    AWS_ENDPOINT_URL: str = ""
    AWS_REGION: str = ""
    AWS_DEFAULT_REGION: str = ""

    @property
    def replies_table(self) -> str:
        return self.CDP_REPLIES_TABLE or f"{self.CDP_TABLE_PREFIX}-replies"

    @property
    def state_table(self) -> str:
        return self.CDP_STATE_TABLE or f"{self.CDP_TABLE_PREFIX}-state"

    @property
    def endpoint_url(self) -> str | None:
        return self.AWS_ENDPOINT_URL_DYNAMODB or self.AWS_ENDPOINT_URL or None

    @property
    def region(self) -> str:
        return self.AWS_REGION or self.AWS_DEFAULT_REGION or "us-east-1"


# -- counters --------------------------------------------------------------------------------------
@dataclass
class DynamoStats:
    """Requests and consumed capacity units of this process (bench reports them per chat request)."""

    reads: int = 0  # read requests (GetItem, Query pages)
    writes: int = 0  # write requests (PutItem, UpdateItem, DeleteItem), including failed conditions
    read_units: float = 0.0
    write_units: float = 0.0

    def snapshot(self) -> dict[str, float]:
        return {"reads": self.reads, "writes": self.writes, "read_units": self.read_units,
                "write_units": self.write_units}

    def reset(self) -> None:
        self.reads = self.writes = 0
        self.read_units = self.write_units = 0.0


STATS = DynamoStats()
_stats_lock = threading.Lock()


def _count(kind: str, response: dict | None) -> None:
    units = float(((response or {}).get("ConsumedCapacity") or {}).get("CapacityUnits") or 0.0)
    with _stats_lock:
        if kind == "read":
            STATS.reads += 1
            STATS.read_units += units
        else:
            STATS.writes += 1
            STATS.write_units += units


# -- client --------------------------------------------------------------------------------------
_clients: dict[tuple, Any] = {}
_clients_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None


def dynamodb_client(cfg: DynamoSettings | None = None):
    """One botocore client per (endpoint, region) per process; thread-safe."""
    cfg = cfg or DynamoSettings()
    key = (cfg.endpoint_url, cfg.region)
    client = _clients.get(key)
    if client is None:
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                import boto3
                from botocore.config import Config

                config = Config(retries={"mode": "standard", "max_attempts": 4}, connect_timeout=3,
                                read_timeout=10, max_pool_connections=32, tcp_keepalive=True)
                client = boto3.session.Session().client(
                    "dynamodb", region_name=cfg.region, endpoint_url=cfg.endpoint_url, config=config)
                _clients[key] = client
    return client


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        with _clients_lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="cdp-ddb")
    return _executor


async def _call(fn, /, **kwargs):
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pool(), lambda: fn(**kwargs))


def _is_condition_failure(exc: Exception) -> bool:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    return code in ("ConditionalCheckFailedException", "TransactionCanceledException")


# -- marshalling (tiny, explicit: we know every attribute's type) ----------------------------------
def _s(v: str) -> dict:
    return {"S": v}


def _n(v: float) -> dict:
    return {"N": str(v)}


def _strings(values) -> dict:
    return {"L": [{"S": str(v)} for v in values]}


def reply_item(message: ReplyMessage, expires_at: int) -> dict:
    return {
        "pk": _s(message.prompt_id), "sk": _s(message.message_id), "kind": _s(KIND_PART),
        "channel_id": _s(message.channel_id), "author_id": _s(message.author_id),
        "content": _s(message.content), "version": _n(message.version),
        "image_urls": _strings(message.image_urls), "suggestions": _strings(message.suggestions),
        "has_components": {"BOOL": bool(message.has_components)},
        "updated_at": _n(round(time.time(), 3)), "expires_at": _n(expires_at),
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
    item = {"pk": _s(CHANNEL_PK), "sk": _s(ch.channel_id), "guild_id": _s(ch.guild_id),
            "created_at": _n(ch.created_at), "request_id": _s(ch.request_id),
            "extra": _s(json.dumps(ch.extra, separators=(",", ":"), default=str)),
            "expires_at": _n(int(ch.created_at) + CHANNEL_TTL_SECONDS)}
    if ch.delete_at is not None:
        item["delete_at"] = _n(ch.delete_at)
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


# -- ReplyStore ------------------------------------------------------------------------------------
class DynamoReplyStore:
    def __init__(self, cfg: DynamoSettings | None = None, client=None) -> None:
        self.cfg = cfg or DynamoSettings()
        self.table = self.cfg.replies_table
        self._client = client
        # What this process last wrote / learnt: saves writes for duplicates and reads for pointers.
        self._written: _Lru = _Lru(20_000)  # message id -> ReplyMessage
        self._pointers: _Lru = _Lru(20_000)  # message id -> prompt id
        self._last_change: _Lru = _Lru(5_000)  # prompt id -> monotonic time of the last seen change

    @property
    def client(self):
        if self._client is None:
            self._client = dynamodb_client(self.cfg)
        return self._client

    async def put(self, message: ReplyMessage) -> bool:
        known = self._written.get(message.message_id)
        if known is not None:
            if known.version > message.version:
                return False  # the table holds at least `known`: the condition would refuse it anyway
            if known == message:
                return True  # same data already stored
        expires_at = int(time.time()) + self.cfg.CDP_REPLY_TTL_SECONDS
        try:
            resp = await _call(
                self.client.put_item, TableName=self.table, Item=reply_item(message, expires_at),
                ConditionExpression="attribute_not_exists(pk) OR version <= :v",
                ExpressionAttributeValues={":v": _n(message.version)}, ReturnConsumedCapacity="TOTAL")
            _count("write", resp)
        except Exception as exc:
            if _is_condition_failure(exc):
                _count("write", getattr(exc, "response", None))
                return False
            raise
        self._written.put(message.message_id, message)
        if self._pointers.get(message.message_id) != message.prompt_id:
            resp = await _call(
                self.client.put_item, TableName=self.table, ReturnConsumedCapacity="TOTAL",
                Item={"pk": _s(f"reply#{message.message_id}"), "sk": _s("prompt"), "kind": _s(KIND_POINTER),
                      "prompt_id": _s(message.prompt_id), "expires_at": _n(expires_at)})
            _count("write", resp)
            self._pointers.put(message.message_id, message.prompt_id)
        return True

    async def prompt_for_reply(self, message_id: str) -> str | None:
        cached = self._pointers.get(message_id)
        if cached is not None:
            return cached
        resp = await _call(self.client.get_item, TableName=self.table, ConsistentRead=True,
                           Key={"pk": _s(f"reply#{message_id}"), "sk": _s("prompt")},
                           ReturnConsumedCapacity="TOTAL")
        _count("read", resp)
        item = resp.get("Item")
        if not item:
            return None
        prompt_id = item["prompt_id"]["S"]
        self._pointers.put(message_id, prompt_id)
        return prompt_id

    async def snapshot(self, prompt_id: str) -> ReplySnapshot:
        messages: list[ReplyMessage] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table, "ConsistentRead": True, "KeyConditionExpression": "pk = :p",
            "ExpressionAttributeValues": {":p": _s(prompt_id)}, "ReturnConsumedCapacity": "TOTAL"}
        while True:
            resp = await _call(self.client.query, **kwargs)
            _count("read", resp)
            messages.extend(reply_from_item(i) for i in resp.get("Items", ())
                            if i.get("kind", {}).get("S", KIND_PART) == KIND_PART)
            last = resp.get("LastEvaluatedKey")
            if not last:
                break
            kwargs["ExclusiveStartKey"] = last
        return ReplySnapshot.of(prompt_id, messages)

    def poll_interval(self, prompt_id: str, now: float) -> float:
        """Fast right after a change (edits are arriving), backing off to POLL_SLOW while Coze thinks."""
        since = now - self._last_change.get(prompt_id, now)
        return min(POLL_SLOW, POLL_FAST + POLL_BACKOFF_PER_SECOND * max(0.0, since))

    async def wait_for_change(self, prompt_id: str, revision: tuple, timeout: float) -> ReplySnapshot:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        if prompt_id not in self._last_change:
            self._last_change.put(prompt_id, loop.time())  # first wait: start fast, then back off
        while True:
            snap = await self.snapshot(prompt_id)
            now = loop.time()
            if snap.revision != revision:
                self._last_change.put(prompt_id, now)
                return snap
            remaining = deadline - now
            if remaining <= 0:
                return snap
            await asyncio.sleep(min(self.poll_interval(prompt_id, now), remaining))


class StateTableAdapter:
    """Base of the adapters whose items live in the generic pk/sk state table."""

    def __init__(self, cfg: DynamoSettings | None = None, client=None) -> None:
        self.cfg = cfg or DynamoSettings()
        self.table = self.cfg.state_table
        self._client = client

    @property
    def client(self):
        if self._client is None:
            self._client = dynamodb_client(self.cfg)
        return self._client


# -- ChannelRegistry -------------------------------------------------------------------------------
class DynamoChannelRegistry(StateTableAdapter):

    async def add(self, channel: TempChannel) -> None:
        resp = await _call(self.client.put_item, TableName=self.table, Item=channel_item(channel),
                           ReturnConsumedCapacity="TOTAL")
        _count("write", resp)

    async def _set_delete_at(self, channel_id: str, delete_at: float, only_if_unscheduled: bool) -> bool:
        cond = "attribute_exists(pk)" + (" AND attribute_not_exists(delete_at)" if only_if_unscheduled else "")
        try:
            resp = await _call(self.client.update_item, TableName=self.table,
                               Key={"pk": _s(CHANNEL_PK), "sk": _s(channel_id)},
                               UpdateExpression="SET delete_at = :d", ConditionExpression=cond,
                               ExpressionAttributeValues={":d": _n(delete_at)}, ReturnConsumedCapacity="TOTAL")
            _count("write", resp)
        except Exception as exc:
            if _is_condition_failure(exc):  # not registered (or already scheduled): nothing to do
                _count("write", getattr(exc, "response", None))
                return False
            raise
        return True

    async def schedule_delete(self, channel_id: str, delete_at: float) -> None:
        await self._set_delete_at(channel_id, delete_at, only_if_unscheduled=False)

    async def schedule_delete_if_in_use(self, channel_id: str, delete_at: float) -> bool:
        """Used by the replies-stream consumer: never postpones a deletion the API already scheduled."""
        return await self._set_delete_at(channel_id, delete_at, only_if_unscheduled=True)

    async def all(self) -> list[TempChannel]:
        out: list[TempChannel] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table, "ConsistentRead": True, "KeyConditionExpression": "pk = :p",
            "ExpressionAttributeValues": {":p": _s(CHANNEL_PK)}, "ReturnConsumedCapacity": "TOTAL"}
        while True:
            resp = await _call(self.client.query, **kwargs)
            _count("read", resp)
            out.extend(channel_from_item(i) for i in resp.get("Items", ()))
            last = resp.get("LastEvaluatedKey")
            if not last:
                return out
            kwargs["ExclusiveStartKey"] = last

    async def due(self, now: float, stale_before: float) -> list[TempChannel]:
        return [c for c in await self.all()
                if (c.delete_at is not None and c.delete_at <= now)
                or (c.delete_at is None and c.created_at <= stale_before)]

    async def remove(self, channel_id: str) -> None:
        resp = await _call(self.client.delete_item, TableName=self.table,
                           Key={"pk": _s(CHANNEL_PK), "sk": _s(channel_id)}, ReturnConsumedCapacity="TOTAL")
        _count("write", resp)


# -- ListenerPresence ------------------------------------------------------------------------------
PRESENCE_PK = "listener"
PRESENCE_HEARTBEAT_SECONDS = 5.0  # the listener publishes at least this often (and on every change)
PRESENCE_FRESH_SECONDS = 20.0  # an entry older than this belongs to a listener that is gone


class DynamoListenerPresence(StateTableAdapter):
    """Each listener publishes {ready, since} under pk "listener"; the API asks whether one is connected.

    Read only when a reply has gone quiet for REPLY_IDLE_TIMEOUT (about once per request), so it costs
    one strongly consistent Query then, never per poll.
    """

    def __init__(self, cfg: DynamoSettings | None = None, client=None, instance_id: str | None = None) -> None:
        import os
        import uuid

        super().__init__(cfg, client)
        self.instance_id = instance_id or f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:6]}"

    async def publish(self, ready: bool, since: float) -> None:
        now = time.time()
        item = {"pk": _s(PRESENCE_PK), "sk": _s(self.instance_id), "ready": {"BOOL": bool(ready)},
                "since": _n(since), "updated_at": _n(now), "expires_at": _n(int(now + 3600))}
        resp = await _call(self.client.put_item, TableName=self.table, Item=item, ReturnConsumedCapacity="TOTAL")
        _count("write", resp)

    async def stable_since(self) -> float | None:
        resp = await _call(self.client.query, TableName=self.table, ConsistentRead=True,
                           KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": _s(PRESENCE_PK)},
                           ReturnConsumedCapacity="TOTAL")
        _count("read", resp)
        now = time.time()
        connected = [float(i["since"]["N"]) for i in resp.get("Items", ())
                     if i.get("ready", {}).get("BOOL") and now - float(i["updated_at"]["N"]) <= PRESENCE_FRESH_SECONDS]
        # Two listeners during a deploy: either one records every reply, so the longest-connected counts.
        return min(connected) if connected else None


def dynamodb_stores(settings=None, cfg: DynamoSettings | None = None):
    """`cdp.entry.bootstrap.make_stores` calls this when CDP_STORE=dynamodb."""
    from cdp.adapters.store.dynamodb.state import state_stores  # health, rate limits, alerts
    from cdp.entry.bootstrap import Stores

    cfg = cfg or DynamoSettings()
    return Stores(DynamoReplyStore(cfg), DynamoChannelRegistry(cfg), DynamoListenerPresence(cfg),
                  **state_stores(cfg))


def table_names(cfg: DynamoSettings | None = None) -> dict[str, str]:
    cfg = cfg or DynamoSettings()
    return {"replies": cfg.replies_table, "state": cfg.state_table}


__all__ = [
    "STATS",
    "DynamoChannelRegistry",
    "DynamoListenerPresence",
    "DynamoReplyStore",
    "DynamoSettings",
    "DynamoStats",
    "channel_from_item",
    "dynamodb_client",
    "dynamodb_stores",
    "reply_from_item",
    "table_names",
]
