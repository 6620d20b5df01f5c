"""Listener presence in DynamoDB: the answering side only calls a silent reply done while a
listener is connected (edits missed during a gap are replayed on RESUME)."""

from __future__ import annotations

import time

from cdp.adapters.store.dynamodb import DynamoListenerPresence
from cdp.adapters.store.dynamodb.state import PRESENCE_FRESH_SECONDS
from cdp.settings import Settings


async def test_presence_reports_the_longest_connected_fresh_listener(aws_env):
    cfg = Settings()
    reader = DynamoListenerPresence(cfg, instance_id="reader")
    a = DynamoListenerPresence(cfg, instance_id="a")
    b = DynamoListenerPresence(cfg, instance_id="b")
    assert await reader.stable_since() is None  # no listener at all
    now = time.time()
    await a.publish(False, now - 5)
    assert await reader.stable_since() is None  # connected to nothing
    await a.publish(True, now - 3)
    await b.publish(True, now - 10)
    assert await reader.stable_since() == now - 10  # two listeners during a deploy: either records
    await b.publish(False, now)
    assert await reader.stable_since() == now - 3


async def test_stale_presence_counts_as_gone(aws_env, moto, tables):
    cfg = Settings()
    presence = DynamoListenerPresence(cfg, instance_id="old")
    await presence.publish(True, time.time() - 100)
    # Age every heartbeat as crashed listeners would leave them.
    _, names = tables
    client = moto.client()
    items = client.query(TableName=names["state"], KeyConditionExpression="pk = :p",
                         ExpressionAttributeValues={":p": {"S": "listener"}})["Items"]
    assert any(i["sk"]["S"] == "old" for i in items)
    for item in items:
        client.update_item(TableName=names["state"], Key={"pk": item["pk"], "sk": item["sk"]},
                           UpdateExpression="SET updated_at = :u",
                           ExpressionAttributeValues={":u": {"N": str(time.time() - PRESENCE_FRESH_SECONDS - 1)}})
    assert await DynamoListenerPresence(cfg, instance_id="r").stable_since() is None
