"""The end-to-end suite runs against the stack of tests/support/stack.py, in every mode."""

from tests.support.stack import stack

__all__ = ["stack"]
