"""The fuzz suite's stack (tests/fuzz/served.py)."""

from tests.fuzz.served import served

__all__ = ["served"]
