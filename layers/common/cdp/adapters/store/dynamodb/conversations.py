"""ConversationStore on the DynamoDB state table (CONVERSATION_MODE=sticky, CDP_STORE=dynamodb).

pk = "sticky", sk = conversation key (a hash)   channel_id, coze_bot_id, fp (fingerprint), last_used,
                                                expires_at (TTL attribute), lease_owner, lease_until

One small item per conversation (about 200 bytes: hashes and ids, never a message or a name). The
lease is a conditional write, so of two requests on one conversation in two Lambdas, one gets it.
DynamoDB's TTL deletes expired items lazily: readers check expires_at themselves.
"""

from __future__ import annotations

from cdp.adapters.store.dynamodb.client import TableAdapter, number, number_of, string
from cdp.domain.sticky import StickyConversation

STICKY_PK = "sticky"
# Items stay this long past their expiry (an expired item is read as gone anyway; TTL tidies up).
TTL_GRACE_SECONDS = 3600


def conversation_item(c: StickyConversation) -> dict:
    item = {"pk": string(STICKY_PK), "sk": string(c.key), "channel_id": string(c.channel_id),
            "coze_bot_id": string(c.coze_bot_id), "fp": string(c.fingerprint),
            "last_used": number(c.last_used), "exp": number(c.expires_at),
            "expires_at": number(int(c.expires_at) + TTL_GRACE_SECONDS)}
    if c.lease_owner:
        item["lease_owner"] = string(c.lease_owner)
        item["lease_until"] = number(c.lease_until)
    return item


def conversation_from_item(item: dict) -> StickyConversation:
    def s(name: str) -> str:
        return item.get(name, {}).get("S", "")

    return StickyConversation(key=s("sk"), channel_id=s("channel_id"), coze_bot_id=s("coze_bot_id"),
                              fingerprint=s("fp"), last_used=number_of(item, "last_used") or 0.0,
                              expires_at=number_of(item, "exp") or 0.0, lease_owner=s("lease_owner"),
                              lease_until=number_of(item, "lease_until") or 0.0)


class DynamoConversationStore(TableAdapter):
    """ConversationStore: one item per sticky conversation under pk "sticky"."""

    def _key(self, key: str) -> dict:
        return {"pk": string(STICKY_PK), "sk": string(key)}

    async def get(self, key: str) -> StickyConversation | None:
        resp = await self.read(self.client.get_item, ConsistentRead=True, Key=self._key(key))
        item = resp.get("Item")
        return conversation_from_item(item) if item else None

    async def put(self, conversation: StickyConversation) -> None:
        await self.write(self.client.put_item, Item=conversation_item(conversation))

    async def lease(self, key: str, owner: str, now: float, until: float) -> StickyConversation | None:
        resp = await self.write_if(
            self.client.update_item, Key=self._key(key),
            UpdateExpression="SET lease_owner = :o, lease_until = :u",
            ConditionExpression="attribute_exists(pk) AND exp > :now AND "
                                "(attribute_not_exists(lease_until) OR lease_until <= :now)",
            ExpressionAttributeValues={":o": string(owner), ":u": number(until), ":now": number(now)},
            ReturnValues="ALL_NEW")
        return conversation_from_item(resp["Attributes"]) if resp is not None else None

    async def delete(self, key: str, owner: str | None = None) -> None:
        if owner is None:
            await self.write(self.client.delete_item, Key=self._key(key))
            return
        await self.write_if(self.client.delete_item, Key=self._key(key), ConditionExpression="lease_owner = :o",
                            ExpressionAttributeValues={":o": string(owner)})

    async def all(self) -> list[StickyConversation]:
        return [conversation_from_item(i) for i in await self.partition(STICKY_PK)]
