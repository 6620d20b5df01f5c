"""DynamoDB adapters for account/bot health, rate-limit counters and alert dedupe (`CDP_STORE=dynamodb`).

All in the generic state table (pk/sk strings, TTL attribute `expires_at`, see cdp.adapters.store.dynamodb):

pk = "health#account" | "health#bot", sk = fingerprint | bot id   health, last_used, resting_until,
                                                                    dead_since, reason
pk = "ratelimit#<client key>",        sk = window number            hits (atomic ADD), short TTL
pk = "alert",                         sk = alert key                day (the last day it was sent)
pk = "prompt#<prompt message id>",    sk = "ledger"                 account (token fingerprint), coze_bot_id,
                                                                    channel_id; TTL ~2 days (PromptLedger)

Every decision that two processes could race on is a conditional write: claiming an account
(last_used must be unchanged), reviving a dead account (refused), sending an alert twice a day.
"""

from __future__ import annotations

import time
from typing import Any

from cdp.adapters.store.dynamodb import (
    DynamoSettings,
    StateTableAdapter,
    _call,
    _count,
    _is_condition_failure,
    _n,
    _s,
)
from cdp.domain.accounts import Health, HealthRecord

HEALTH_TTL_SECONDS = 400 * 24 * 3600  # refreshed on every write; a forgotten token's record fades out
ALERT_TTL_SECONDS = 3 * 24 * 3600
PROMPT_TTL_SECONDS = 2 * 24 * 3600  # replies live ~1 day; a stream record is retried for at most a day
PROMPT_SK = "ledger"
ATTR_NAMES = {"#h": "health", "#lu": "last_used", "#ru": "resting_until", "#ds": "dead_since",
              "#r": "reason", "#x": "expires_at"}


class _StateTable(StateTableAdapter):
    async def _write(self, fn, **kw) -> dict | None:
        """A conditional write; None when its condition failed."""
        try:
            resp = await _call(fn, TableName=self.table, ReturnConsumedCapacity="TOTAL", **kw)
        except Exception as exc:
            if _is_condition_failure(exc):
                _count("write", getattr(exc, "response", None))
                return None
            raise
        _count("write", resp)
        return resp


def _health_pk(kind: str) -> dict:
    return _s(f"health#{kind}")


def _num(item: dict, name: str) -> float | None:
    v = item.get(name)
    return float(v["N"]) if v and "N" in v else None


def health_from_item(item: dict) -> HealthRecord:
    return HealthRecord(
        key=item["sk"]["S"], health=Health(item.get("health", {}).get("S", Health.HEALTHY.value)),
        last_used=_num(item, "last_used") or 0.0, resting_until=_num(item, "resting_until"),
        dead_since=_num(item, "dead_since"), reason=item.get("reason", {}).get("S", ""))


class DynamoHealthStore(_StateTable):
    async def load(self, kind: str) -> dict[str, HealthRecord]:
        out: dict[str, HealthRecord] = {}
        kwargs: dict[str, Any] = {
            "TableName": self.table, "ConsistentRead": True, "KeyConditionExpression": "pk = :p",
            "ExpressionAttributeValues": {":p": _health_pk(kind)}, "ReturnConsumedCapacity": "TOTAL"}
        while True:
            resp = await _call(self.client.query, **kwargs)
            _count("read", resp)
            for item in resp.get("Items", ()):
                rec = health_from_item(item)
                out[rec.key] = rec
            if not resp.get("LastEvaluatedKey"):
                return out
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    async def claim(self, kind: str, key: str, previous_last_used: float, now: float) -> bool:
        cond = "#lu = :prev" if previous_last_used else "attribute_not_exists(#lu) OR #lu = :prev"
        resp = await self._write(
            self.client.update_item, Key={"pk": _health_pk(kind), "sk": _s(key)},
            UpdateExpression="SET #lu = :now, #x = :x", ConditionExpression=cond,
            ExpressionAttributeNames={"#lu": "last_used", "#x": "expires_at"},
            ExpressionAttributeValues={":now": _n(now), ":prev": _n(previous_last_used),
                                       ":x": _n(int(now) + HEALTH_TTL_SECONDS)})
        return resp is not None

    async def save_health(self, kind: str, record: HealthRecord) -> None:
        sets = ["#h = :h", "#r = :r", "#x = :x"]
        removes = []
        values: dict[str, Any] = {":h": _s(record.health.value), ":r": _s(record.reason or ""),
                                  ":x": _n(int(time.time()) + HEALTH_TTL_SECONDS), ":dead": _s(Health.DEAD.value)}
        for attr, name, value in (("#ru", "resting_until", record.resting_until),
                                  ("#ds", "dead_since", record.dead_since)):
            if value is None:
                removes.append(attr)
            else:
                sets.append(f"{attr} = :{name}")
                values[f":{name}"] = _n(value)
        expr = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        # a dead record is never revived (another process may have found it dead meanwhile)
        await self._write(
            self.client.update_item, Key={"pk": _health_pk(kind), "sk": _s(record.key)},
            UpdateExpression=expr, ConditionExpression="attribute_not_exists(#h) OR #h <> :dead OR :h = :dead",
            ExpressionAttributeNames={k: v for k, v in ATTR_NAMES.items() if k != "#lu"},
            ExpressionAttributeValues=values)


class DynamoRateLimitStore(_StateTable):
    async def hit(self, key: str, window: int, ttl: float) -> int:
        resp = await self._write(
            self.client.update_item, Key={"pk": _s(f"ratelimit#{key}"), "sk": _s(str(window))},
            UpdateExpression="ADD hits :one SET #x = if_not_exists(#x, :x)",
            ExpressionAttributeNames={"#x": "expires_at"},
            ExpressionAttributeValues={":one": _n(1), ":x": _n(int(time.time() + ttl))},
            ReturnValues="UPDATED_NEW")
        assert resp is not None  # unconditional
        return int(resp["Attributes"]["hits"]["N"])


class DynamoAlertStore(_StateTable):
    async def claim(self, key: str, day: str) -> bool:
        resp = await self._write(
            self.client.put_item,
            Item={"pk": _s("alert"), "sk": _s(key), "day": _s(day),
                  "expires_at": _n(int(time.time()) + ALERT_TTL_SECONDS)},
            ConditionExpression="attribute_not_exists(pk) OR #d <> :d",
            ExpressionAttributeNames={"#d": "day"}, ExpressionAttributeValues={":d": _s(day)})
        return resp is not None

    async def release(self, key: str, day: str) -> None:
        await self._write(self.client.delete_item, Key={"pk": _s("alert"), "sk": _s(key)},
                          ConditionExpression="#d = :d", ExpressionAttributeNames={"#d": "day"},
                          ExpressionAttributeValues={":d": _s(day)})


class DynamoPromptLedger(_StateTable):
    """Who posted each prompt (one PutItem per chat; read by the replies-stream consumer)."""

    async def record(self, prompt_id: str, account_fp: str, coze_bot_id: str, channel_id: str) -> None:
        await self._write(
            self.client.put_item,
            Item={"pk": _s(f"prompt#{prompt_id}"), "sk": _s(PROMPT_SK), "account": _s(account_fp),
                  "coze_bot_id": _s(coze_bot_id), "channel_id": _s(channel_id),
                  "expires_at": _n(int(time.time()) + PROMPT_TTL_SECONDS)})

    async def lookup(self, prompt_id: str) -> dict | None:
        resp = await _call(self.client.get_item, TableName=self.table, ConsistentRead=True,
                           Key={"pk": _s(f"prompt#{prompt_id}"), "sk": _s(PROMPT_SK)},
                           ReturnConsumedCapacity="TOTAL")
        _count("read", resp)
        item = resp.get("Item")
        if not item:
            return None
        return {k: item.get(k, {}).get("S", "") for k in ("account", "coze_bot_id", "channel_id")}


def state_stores(cfg: DynamoSettings | None = None) -> dict[str, Any]:
    """Keyword arguments for bootstrap.Stores: health, ratelimits, alerts, ledger."""
    cfg = cfg or DynamoSettings()
    return {"health": DynamoHealthStore(cfg), "ratelimits": DynamoRateLimitStore(cfg),
            "alerts": DynamoAlertStore(cfg), "ledger": DynamoPromptLedger(cfg)}
