"""MemoryRateLimitStore (REQUEST_RATE_LIMIT in `cdp serve`): expiry is amortised O(1) and the table is
bounded (issue 12: past 50k keys every request scanned the whole table). Cost is counted in Python line
events inside the store (every loop iteration is one), never in time."""

from __future__ import annotations

import sys

from cdp.adapters.store import memory
from cdp.adapters.store.memory import MemoryRateLimitStore


def run(coro):
    """Drive a coroutine that never suspends (the store's hit) without an event loop."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("hit() suspended")


def lines_in_store(fn) -> int:
    """How many lines of cdp/adapters/store/memory.py run during fn() (loop iterations included)."""
    count = 0
    path = memory.__file__

    def tracer(frame, event, arg):
        nonlocal count
        if frame.f_code.co_filename != path:
            return None
        if event == "line":
            count += 1
        return tracer

    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(None)
    return count


def test_cost_per_hit_does_not_grow_with_keys():
    store = MemoryRateLimitStore()
    n = 100_000
    for i in range(n - 1000):
        run(store.hit(f"ip#{i}", 7, ttl=120))
    late = lines_in_store(lambda: [run(store.hit(f"ip#{i}", 7, ttl=120)) for i in range(n - 1000, n)])
    fresh = MemoryRateLimitStore()
    early = lines_in_store(lambda: [run(fresh.hit(f"ip#{i}", 7, ttl=120)) for i in range(1000)])
    assert store.size() == n
    assert late <= early * 1.1 + 10, (early, late)  # the 100,000th key costs what the first did


def test_table_shrinks_when_the_window_passes():
    store = MemoryRateLimitStore()
    for i in range(100_000):
        run(store.hit(f"ip#{i}", 7, ttl=120))
    assert run(store.hit("ip#0", 7, ttl=120)) == 2  # still counting within the window
    # the next window: the old one goes whole, in one step of the first request
    cost = lines_in_store(lambda: run(store.hit("ip#0", 8, ttl=120)))
    assert store.size() == 1
    assert cost < 30
    assert run(store.hit("ip#0", 8, ttl=120)) == 2


def test_late_request_for_the_previous_window_is_counted_then_dropped():
    store = MemoryRateLimitStore()
    assert run(store.hit("a", 8, ttl=120)) == 1
    assert run(store.hit("a", 7, ttl=120)) == 1  # read the clock just before the turn
    assert run(store.hit("a", 8, ttl=120)) == 2
    run(store.hit("a", 9, ttl=120))
    assert store.size() == 1


def test_size_is_bounded_within_one_window():
    store = MemoryRateLimitStore(max_keys=1000)
    for i in range(5000):
        run(store.hit(f"ip#{i}", 7, ttl=120))
    assert store.size() == 1000
    assert run(store.hit("ip#4999", 7, ttl=120)) == 2  # recent keys keep their count
    assert run(store.hit("ip#0", 7, ttl=120)) == 1  # the oldest were forgotten
