"""Adapters: each implements ports of cdp.ports against one technology (Discord, DynamoDB, S3,
Telegram, files). They never import a use case or an edge."""
