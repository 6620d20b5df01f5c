"""Pure domain rules: no I/O, and nothing of cdp outside cdp.domain (checked in tests/unit/test_architecture.py)."""
