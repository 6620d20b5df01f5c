"""LeaseStore on the DynamoDB state table (`CDP_STORE=dynamodb`): the limits of each Discord user
account hold across every Lambda instance and the `cdp serve` processes sharing the table.

pk = "lease#account", sk = fingerprint    h<i>, e<i>: holder and expiry (epoch s) of slot i;
                                            lp: epoch s of the last post; TTL expires_at

`take` reads the item (strongly consistent), asks cdp.domain.fairness.decide_take, then writes the
slot with a condition that re-checks what it read: the slot is still free (absent or expired) and the
last post is still `lp` (the ACCOUNT_MIN_GAP check). Two instances racing for one slot: one write
fails its condition and that instance reads again. An expired slot is simply taken over, so a crashed
instance holds an account for at most its lease's ttl.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

from cdp.adapters.store.dynamodb.client import TableAdapter, number, number_of, string
from cdp.domain.fairness import Slot, TakeDecision, decide_take

LEASE_PK = "lease#account"
TAKE_ATTEMPTS = 4
RACE_RETRY_SECONDS = 0.05  # lost every race: let the caller come back soon
ITEM_TTL_SECONDS = 24 * 3600  # an account no longer used: its item fades out


def slots_from_item(item: dict, max_concurrent: int) -> list[Slot]:
    return [Slot(item.get(f"h{i}", {}).get("S", ""), number_of(item, f"e{i}") or 0.0)
            for i in range(max_concurrent)]


class DynamoLeaseStore(TableAdapter):
    async def take(self, account: str, holder: str, now: float, *, max_concurrent: int, min_gap: float,
                   ttl: float) -> TakeDecision:
        key = {"pk": string(LEASE_PK), "sk": string(account)}
        called, started = now, time.monotonic()
        for _ in range(TAKE_ATTEMPTS):
            resp = await self.read(self.client.get_item, Key=key, ConsistentRead=True)
            # `now` as of this read's answer (after any lost attempts): a slot freed meanwhile is taken
            # after its release, and the post time kept for ACCOUNT_MIN_GAP is not earlier than the real one
            now = called + (time.monotonic() - started)
            item = resp.get("Item") or {}
            last_post = number_of(item, "lp") or 0.0
            decision = decide_take(slots_from_item(item, max_concurrent), last_post, now,
                                   max_concurrent=max_concurrent, min_gap=min_gap)
            if decision.slot is None:
                return decision
            i = decision.slot
            cond = "(attribute_not_exists(#e) OR #e <= :now) AND " + (
                "#lp = :lp" if last_post else "attribute_not_exists(#lp)")
            values = {":now": number(now), ":exp": number(now + ttl), ":h": string(holder),
                      ":x": number(int(math.ceil(now + ttl)) + ITEM_TTL_SECONDS)}
            if last_post:
                values[":lp"] = number(last_post)
            written = await self.write_if(
                self.client.update_item, Key=key,
                UpdateExpression="SET #e = :exp, #h = :h, #lp = :now, #x = :x", ConditionExpression=cond,
                ExpressionAttributeNames={"#e": f"e{i}", "#h": f"h{i}", "#lp": "lp", "#x": "expires_at"},
                ExpressionAttributeValues=values)
            if written is not None:
                return replace(decision, at=now)
        return TakeDecision(None, RACE_RETRY_SECONDS)

    async def release(self, account: str, slot: int, holder: str) -> None:
        await self.write_if(
            self.client.update_item, Key={"pk": string(LEASE_PK), "sk": string(account)},
            UpdateExpression="REMOVE #e, #h", ConditionExpression="#h = :h",
            ExpressionAttributeNames={"#e": f"e{slot}", "#h": f"h{slot}"},
            ExpressionAttributeValues={":h": string(holder)})

    async def renew(self, account: str, slot: int, holder: str, expires_at: float) -> bool:
        written = await self.write_if(
            self.client.update_item, Key={"pk": string(LEASE_PK), "sk": string(account)},
            UpdateExpression="SET #e = :exp, #x = :x", ConditionExpression="#h = :h",
            ExpressionAttributeNames={"#e": f"e{slot}", "#h": f"h{slot}", "#x": "expires_at"},
            ExpressionAttributeValues={":h": string(holder), ":exp": number(expires_at),
                                       ":x": number(int(math.ceil(expires_at)) + ITEM_TTL_SECONDS)})
        return written is not None
