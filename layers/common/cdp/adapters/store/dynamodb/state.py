"""DynamoDB adapters for account/bot health, rate limits, alert dedupe, the prompt ledger and the
listener's presence (`CDP_STORE=dynamodb`), and `dynamodb_stores`, which builds every store.

All in the generic state table (pk/sk strings, TTL attribute `expires_at`; the channel registry: replies.py):

pk = "health#account" | "health#bot", sk = fingerprint | bot id   health, last_used, resting_until,
                                                                    dead_since, reason
pk = "ratelimit#<client key>",        sk = window number            hits (atomic ADD), short TTL
pk = "alert",                         sk = alert key                day (the last day it was sent)
pk = "prompt#<prompt message id>",    sk = "ledger"                 account (token fingerprint), coze_bot_id,
                                                                    channel_id; TTL ~2 days (PromptLedger)
pk = "listener",                      sk = listener instance id     ready, since, updated_at (heartbeat)
pk = "sticky",                        sk = conversation key         sticky conversations (conversations.py)
pk = "lease#account",                 sk = fingerprint              account slots and last post (leases.py)

Every decision that two processes could race on is a conditional write: claiming an account
(last_used must be unchanged), reviving a dead account (refused), sending an alert twice a day.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from cdp.adapters.store.dynamodb.client import TableAdapter, number, number_of, string
from cdp.adapters.store.dynamodb.conversations import DynamoConversationStore
from cdp.adapters.store.dynamodb.leases import DynamoLeaseStore
from cdp.adapters.store.dynamodb.replies import DynamoChannelRegistry, DynamoReplyStore
from cdp.domain.accounts import Health, HealthRecord
from cdp.ports import Stores
from cdp.settings import Settings

HEALTH_TTL_SECONDS = 400 * 24 * 3600  # refreshed on every write; a forgotten token's record fades out
ALERT_TTL_SECONDS = 3 * 24 * 3600
PROMPT_TTL_SECONDS = 2 * 24 * 3600  # replies live ~1 day; a stream record is retried for at most a day
PROMPT_SK = "ledger"
PRESENCE_PK = "listener"
PRESENCE_FRESH_SECONDS = 20.0  # an entry older than this belongs to a listener that is gone
ATTR_NAMES = {"#h": "health", "#lu": "last_used", "#ru": "resting_until", "#ds": "dead_since",
              "#r": "reason", "#x": "expires_at"}


def _health_pk(kind: str) -> str:
    return f"health#{kind}"


def health_from_item(item: dict) -> HealthRecord:
    return HealthRecord(
        key=item["sk"]["S"], health=Health(item.get("health", {}).get("S", Health.HEALTHY.value)),
        last_used=number_of(item, "last_used") or 0.0, resting_until=number_of(item, "resting_until"),
        dead_since=number_of(item, "dead_since"), reason=item.get("reason", {}).get("S", ""))


class DynamoHealthStore(TableAdapter):
    """HealthStore: one item per account or bot; claims and deaths are conditional writes."""

    async def load(self, kind: str) -> dict[str, HealthRecord]:
        records = (health_from_item(item) for item in await self.partition(_health_pk(kind)))
        return {rec.key: rec for rec in records}

    async def claim(self, kind: str, key: str, previous_last_used: float, now: float) -> bool:
        cond = "#lu = :prev" if previous_last_used else "attribute_not_exists(#lu) OR #lu = :prev"
        resp = await self.write_if(
            self.client.update_item, Key={"pk": string(_health_pk(kind)), "sk": string(key)},
            UpdateExpression="SET #lu = :now, #x = :x", ConditionExpression=cond,
            ExpressionAttributeNames={"#lu": "last_used", "#x": "expires_at"},
            ExpressionAttributeValues={":now": number(now), ":prev": number(previous_last_used),
                                       ":x": number(int(now) + HEALTH_TTL_SECONDS)})
        return resp is not None

    async def save_health(self, kind: str, record: HealthRecord) -> None:
        sets = ["#h = :h", "#r = :r", "#x = :x"]
        removes = []
        values: dict[str, Any] = {":h": string(record.health.value), ":r": string(record.reason or ""),
                                  ":x": number(int(time.time()) + HEALTH_TTL_SECONDS),
                                  ":dead": string(Health.DEAD.value)}
        for attr, name, value in (("#ru", "resting_until", record.resting_until),
                                  ("#ds", "dead_since", record.dead_since)):
            if value is None:
                removes.append(attr)
            else:
                sets.append(f"{attr} = :{name}")
                values[f":{name}"] = number(value)
        expr = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        # a dead record is never revived (another process may have found it dead meanwhile)
        await self.write_if(
            self.client.update_item, Key={"pk": string(_health_pk(kind)), "sk": string(record.key)},
            UpdateExpression=expr,
            ConditionExpression="attribute_not_exists(#h) OR #h <> :dead OR :h = :dead",
            ExpressionAttributeNames={k: v for k, v in ATTR_NAMES.items() if k != "#lu"},
            ExpressionAttributeValues=values)


class DynamoRateLimitStore(TableAdapter):
    """RateLimitStore: one atomic counter per (client, window)."""

    async def hit(self, key: str, window: int, ttl: float) -> int:
        resp = await self.write(
            self.client.update_item, Key={"pk": string(f"ratelimit#{key}"), "sk": string(str(window))},
            UpdateExpression="ADD hits :one SET #x = if_not_exists(#x, :x)",
            ExpressionAttributeNames={"#x": "expires_at"},
            ExpressionAttributeValues={":one": number(1), ":x": number(int(time.time() + ttl))},
            ReturnValues="UPDATED_NEW")
        return int(resp["Attributes"]["hits"]["N"])


class DynamoAlertStore(TableAdapter):
    """AlertStore: the day each alert was last sent, claimed with a conditional write."""

    async def claim(self, key: str, day: str) -> bool:
        resp = await self.write_if(
            self.client.put_item,
            Item={"pk": string("alert"), "sk": string(key), "day": string(day),
                  "expires_at": number(int(time.time()) + ALERT_TTL_SECONDS)},
            ConditionExpression="attribute_not_exists(pk) OR #d <> :d",
            ExpressionAttributeNames={"#d": "day"}, ExpressionAttributeValues={":d": string(day)})
        return resp is not None

    async def release(self, key: str, day: str) -> None:
        await self.write_if(self.client.delete_item, Key={"pk": string("alert"), "sk": string(key)},
                            ConditionExpression="#d = :d", ExpressionAttributeNames={"#d": "day"},
                            ExpressionAttributeValues={":d": string(day)})


class DynamoPromptLedger(TableAdapter):
    """Who posted each prompt (one PutItem per chat; read by the replies-stream consumer)."""

    async def record(self, prompt_id: str, account_fp: str, coze_bot_id: str, channel_id: str) -> None:
        await self.write(
            self.client.put_item,
            Item={"pk": string(f"prompt#{prompt_id}"), "sk": string(PROMPT_SK),
                  "account": string(account_fp), "coze_bot_id": string(coze_bot_id),
                  "channel_id": string(channel_id),
                  "expires_at": number(int(time.time()) + PROMPT_TTL_SECONDS)})

    async def lookup(self, prompt_id: str) -> dict | None:
        resp = await self.read(self.client.get_item, ConsistentRead=True,
                               Key={"pk": string(f"prompt#{prompt_id}"), "sk": string(PROMPT_SK)})
        item = resp.get("Item")
        if not item:
            return None
        return {k: item.get(k, {}).get("S", "") for k in ("account", "coze_bot_id", "channel_id")}


class DynamoListenerPresence(TableAdapter):
    """Each listener publishes {ready, since} under pk "listener"; the API asks whether one is connected.

    Read only when a reply has gone quiet for REPLY_IDLE_TIMEOUT (about once per request), so it costs
    one strongly consistent Query then, never per poll.
    """

    def __init__(self, settings: Settings | None = None, client=None, instance_id: str | None = None) -> None:
        super().__init__(settings, client)
        self.instance_id = instance_id or f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:6]}"

    async def publish(self, ready: bool, since: float) -> None:
        now = time.time()
        await self.write(self.client.put_item, Item={
            "pk": string(PRESENCE_PK), "sk": string(self.instance_id), "ready": {"BOOL": bool(ready)},
            "since": number(since), "updated_at": number(now), "expires_at": number(int(now + 3600))})

    async def stable_since(self) -> float | None:
        items = await self.partition(PRESENCE_PK)
        now = time.time()
        connected = [float(i["since"]["N"]) for i in items if i.get("ready", {}).get("BOOL")
                     and now - float(i["updated_at"]["N"]) <= PRESENCE_FRESH_SECONDS]
        # Two listeners during a deploy: either one records every reply, so the longest-connected counts.
        return min(connected) if connected else None


def dynamodb_stores(settings: Settings) -> Stores:
    """Every store on the two tables; `cdp.entry.bootstrap.make_stores` calls this when CDP_STORE=dynamodb."""
    return Stores(DynamoReplyStore(settings), DynamoChannelRegistry(settings),
                  presence=DynamoListenerPresence(settings), health=DynamoHealthStore(settings),
                  ratelimits=DynamoRateLimitStore(settings), alerts=DynamoAlertStore(settings),
                  ledger=DynamoPromptLedger(settings), conversations=DynamoConversationStore(settings),
                  leases=DynamoLeaseStore(settings))
