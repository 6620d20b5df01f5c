"""cdp.domain.fairness: round-robin between API keys, account slots and the gap, the expected wait."""

from __future__ import annotations

import math

from cdp.domain.fairness import FairQueue, HoldEstimate, Slot, decide_take, expected_wait


def drain(q: FairQueue) -> list:
    out = []
    while len(q):
        out.append(q.pop())
    return out


def test_round_robin_between_keys_fifo_within_a_key():
    q: FairQueue[str] = FairQueue()
    for i in range(5):
        q.push("burst", f"b{i}")
    q.push("other", "o0")
    q.push("third", "t0")
    q.push("other", "o1")
    assert q.peek() == "b0"
    # one burst of 5 does not starve the others: they are served in turn
    assert drain(q) == ["b0", "o0", "t0", "b1", "o1", "b2", "b3", "b4"]
    assert q.peek() is None and len(q) == 0


def test_remove_anywhere_keeps_the_turn():
    q: FairQueue[str] = FairQueue()
    for item, key in [("a0", "a"), ("b0", "b"), ("a1", "a"), ("c0", "c")]:
        q.push(key, item)
    assert q.remove("b0") and not q.remove("b0")
    assert len(q) == 3
    assert drain(q) == ["a0", "c0", "a1"]


def test_ahead_of_matches_the_serving_order():
    q: FairQueue[str] = FairQueue()
    for i in range(4):
        q.push("a", f"a{i}")
    q.push("b", "b0")
    # a new "b" item: served after a0, b0, a1 (b's second round comes after a's second)
    assert q.ahead_of("b") == 3
    # a new key: after one item of each waiting key, however long the burst
    assert q.ahead_of("c") == 2
    # a new "a" item: after all 4 of a and the one b
    assert q.ahead_of("a") == 5
    q.push("b", "new")
    assert drain(q).index("new") == 3


def test_take_a_free_slot_and_respect_the_limit_and_the_gap():
    now = 1000.0
    # never used: slot 0
    assert decide_take([], 0.0, now, max_concurrent=1, min_gap=2).slot == 0
    # one slot held, limit 1: wait until it expires
    held = [Slot("r1", now + 50)]
    d = decide_take(held, now - 10, now, max_concurrent=1, min_gap=2)
    assert d.slot is None and d.retry_in == 50
    # limit 2: the second slot, once the gap since the last post has passed
    assert decide_take(held, now - 10, now, max_concurrent=2, min_gap=2).slot == 1
    d = decide_take(held, now - 0.5, now, max_concurrent=2, min_gap=2)
    assert d.slot is None and d.retry_in == 1.5
    # an expired slot is free again (a crashed holder)
    assert decide_take([Slot("dead", now - 1)], now - 60, now, max_concurrent=1, min_gap=2).slot == 0
    # slots beyond a lowered limit are ignored
    assert decide_take([Slot(), Slot("x", now + 9)], 0.0, now, max_concurrent=1, min_gap=0).slot == 0


def test_expected_wait():
    assert expected_wait(ahead=0, in_flight=2, capacity=3, cycle=10) == 0
    assert expected_wait(ahead=0, in_flight=3, capacity=3, cycle=10) == 10
    assert expected_wait(ahead=3, in_flight=3, capacity=3, cycle=10) == 20
    assert expected_wait(ahead=4, in_flight=3, capacity=3, cycle=10) == 20
    assert expected_wait(ahead=0, in_flight=0, capacity=0, cycle=10) == math.inf


def test_hold_estimate_moves_toward_what_is_measured():
    h = HoldEstimate(5.0, weight=0.5)
    h.add(9.0)
    assert h.value == 7.0
    h.add(-1)  # a clock step back is ignored
    assert h.value == 7.0
