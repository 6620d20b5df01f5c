"""Edges: the HTTP API, the CLI, the listener process, the Lambda glue and the wiring (bootstrap).
Protocols (OpenAI, the original's /api, Discord interactions) are spoken here and nowhere else."""
