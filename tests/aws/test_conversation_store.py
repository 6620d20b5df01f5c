"""The ConversationStore contract (sticky conversations), each test against the memory adapter and the
DynamoDB adapter on a moto server (tables from template.yaml): two store objects = two processes."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from cdp.adapters.store.dynamodb.conversations import DynamoConversationStore
from cdp.adapters.store.memory import MemoryConversationStore
from cdp.domain.sticky import StickyConversation

from tests.support.aws import store_settings


@pytest.fixture(params=["memory", "dynamodb"])
def store_pair(request, moto, tables):
    """Two store objects sharing one state."""
    if request.param == "memory":
        shared = MemoryConversationStore()
        return shared, shared
    c = store_settings(moto, tables)
    return DynamoConversationStore(c), DynamoConversationStore(c)


def conv(key: str, now: float, ttl: float = 100.0, **kw) -> StickyConversation:
    return StickyConversation(key, "123456789012345678", "987654321098765432", "h-" + "0" * 40, now, now + ttl, **kw)


async def test_put_get_and_delete_round_trip(store_pair):
    a, b = store_pair
    key = f"h-{uuid.uuid4().hex}"
    assert await b.get(key) is None
    await a.put(conv(key, 1000.0))
    assert await b.get(key) == conv(key, 1000.0)
    await b.delete(key)
    assert await a.get(key) is None


async def test_one_lease_at_a_time_and_only_on_a_live_conversation(store_pair):
    a, b = store_pair
    key = f"n-{uuid.uuid4().hex}"
    assert await a.lease(key, "req_1", 1000.0, 1100.0) is None  # absent
    await a.put(conv(key, 1000.0, ttl=1000.0))
    got = await a.lease(key, "req_1", 1001.0, 1100.0)
    assert got is not None and got.lease_owner == "req_1" and got.leased(1050.0)
    assert await b.lease(key, "req_2", 1050.0, 1150.0) is None  # busy
    assert (await b.get(key)).lease_owner == "req_1"
    again = await b.lease(key, "req_2", 1100.0, 1150.0)  # the first lease has lapsed
    assert again is not None and again.lease_owner == "req_2"
    await a.delete(key, owner="req_1")  # no longer its lease: kept
    assert await b.get(key) is not None
    await a.delete(key, owner="req_2")
    assert await b.get(key) is None


async def test_an_expired_conversation_cannot_be_leased(store_pair):
    a, _ = store_pair
    key = f"h-{uuid.uuid4().hex}"
    await a.put(conv(key, 1000.0, ttl=10.0))
    assert await a.lease(key, "req_1", 1010.0, 1100.0) is None
    assert (await a.get(key)).expired(1010.0)


async def test_concurrent_leases_one_wins(store_pair):
    a, b = store_pair
    key = f"n-{uuid.uuid4().hex}"
    await a.put(conv(key, 1000.0))
    results = await asyncio.gather(*(s.lease(key, f"req_{i}", 1001.0, 1100.0)
                                     for i, s in enumerate([a, b, a, b])))
    assert sum(r is not None for r in results) == 1


async def test_all_lists_the_conversations(store_pair):
    a, b = store_pair
    keys = [f"h-{uuid.uuid4().hex}" for _ in range(3)]
    for k in keys:
        await a.put(conv(k, 4_000_000_000.0))
    listed = {c.key for c in await b.all()}
    assert set(keys) <= listed
