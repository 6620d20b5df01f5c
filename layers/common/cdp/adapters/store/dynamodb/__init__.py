"""DynamoDB adapters for the store ports (`CDP_STORE=dynamodb`): client.py (client, counters, shared
calls), replies.py (replies table, channel registry), state.py (the other state-table stores)."""

from cdp.adapters.store.dynamodb.client import STATS, describe_table, dynamodb_client, error_code
from cdp.adapters.store.dynamodb.conversations import DynamoConversationStore
from cdp.adapters.store.dynamodb.leases import DynamoLeaseStore
from cdp.adapters.store.dynamodb.replies import (
    KIND_PART,
    DynamoChannelRegistry,
    DynamoReplyStore,
    reply_from_item,
)
from cdp.adapters.store.dynamodb.state import (
    DynamoAlertStore,
    DynamoHealthStore,
    DynamoListenerPresence,
    DynamoPromptLedger,
    DynamoRateLimitStore,
    dynamodb_stores,
)

__all__ = [
    "KIND_PART",
    "STATS",
    "DynamoAlertStore",
    "DynamoChannelRegistry",
    "DynamoConversationStore",
    "DynamoHealthStore",
    "DynamoLeaseStore",
    "DynamoListenerPresence",
    "DynamoPromptLedger",
    "DynamoRateLimitStore",
    "DynamoReplyStore",
    "describe_table",
    "dynamodb_client",
    "dynamodb_stores",
    "error_code",
    "reply_from_item",
]
