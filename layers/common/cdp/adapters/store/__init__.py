"""Reply, channel and state stores: memory (one process) and dynamodb (AWS)."""
