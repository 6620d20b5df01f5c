"""Waiting in async tests for something observable to happen, instead of sleeping a guessed time.
(Blocking tests use tests.support.aws.wait_until.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def until[T](pred: Callable[[], T], timeout: float = 10.0, what: str = "condition", every: float = 0.01) -> T:
    """The first truthy value of `pred()`, polled every `every` seconds; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while not (value := pred()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(every)
    return value


def task_running(name: str) -> bool:
    """A task of that name is running on this event loop (the product names its background tasks)."""
    return any(t.get_name() == name and not t.done() for t in asyncio.all_tasks())
