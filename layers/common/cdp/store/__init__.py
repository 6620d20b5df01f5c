"""State ports (ports.py) and their adapters: memory.py (one process) and dynamodb.py (AWS)."""
