"""Replies-stream function: the replies table's DynamoDB stream -> side effects that must happen
even if the client left (temporary channel scheduled for deletion, account/bot cooldowns on Coze
limit texts, metrics)."""

from cdp.entry.aws.stream_consumer import replies_stream_handler

handler = replies_stream_handler()
