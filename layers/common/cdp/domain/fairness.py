"""Fair queueing of prompts for the Discord user accounts, and the rules of an account's lease. Pure.

- `FairQueue`: requests waiting for an account, round-robin between API keys (first in, first out
  within one key), so one key's burst never starves another key.
- An account has `max_concurrent` slots (ACCOUNT_MAX_CONCURRENT): a prompt in flight holds one until
  its reply is over, or until the slot's expiry (a crashed process cannot hold it forever). Two posts
  of one account are at least `min_gap` seconds apart (ACCOUNT_MIN_GAP). `decide_take` says whether a
  slot can be taken now, and if not, when trying again makes sense.
- `expected_wait` and `HoldEstimate`: how long a newcomer would wait, to refuse it at once (429)
  instead of letting it wait past QUEUE_MAX_WAIT.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass


class FairQueue[T]:
    """Items waiting per key; `peek`/`pop` serve the keys in turn (round-robin), each key in order."""

    def __init__(self) -> None:
        self._by_key: dict[str, deque[T]] = {}
        self._turn: deque[str] = deque()  # keys with waiting items; the first one is served next
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def push(self, key: str, item: T) -> None:
        items = self._by_key.get(key)
        if items is None:
            items = self._by_key[key] = deque()
            self._turn.append(key)
        items.append(item)
        self._size += 1

    def peek(self) -> T | None:
        """The item served next, or None when empty."""
        if not self._turn:
            return None
        return self._by_key[self._turn[0]][0]

    def pop(self) -> T:
        """Remove the item served next; its key goes to the back of the turn."""
        key = self._turn.popleft()
        items = self._by_key[key]
        item = items.popleft()
        self._size -= 1
        if items:
            self._turn.append(key)
        else:
            del self._by_key[key]
        return item

    def remove(self, item: T) -> bool:
        """Take `item` out wherever it is (gave up, served); False if it is not queued."""
        for key, items in self._by_key.items():
            if item in items:
                items.remove(item)
                self._size -= 1
                if not items:
                    del self._by_key[key]
                    self._turn.remove(key)
                return True
        return False

    def ahead_of(self, key: str) -> int:
        """How many queued items would be served before a new item of `key` pushed now."""
        items = self._by_key.get(key)
        # the new item is served in round `rounds` (0-based) of its key; a new key joins the turn last,
        # so its first item comes after one item of every key waiting now, however long their queues
        rounds = len(items) if items is not None else 0
        pos = self._turn.index(key) if items is not None else len(self._turn)
        ahead = 0
        for i, k in enumerate(self._turn):
            n = len(self._by_key[k])
            ahead += min(n, rounds + (1 if i < pos else 0)) if k != key else rounds
        return ahead


@dataclass(frozen=True)
class Slot:
    """One of an account's ACCOUNT_MAX_CONCURRENT slots, as stored: who holds it, until when."""

    holder: str = ""
    expires_at: float = 0.0

    def free(self, now: float) -> bool:
        return not self.holder or self.expires_at <= now


@dataclass(frozen=True)
class TakeDecision:
    """`slot`: the index to take now, or None; then `retry_in`: seconds until one may be free.
    `at`: the time the slot was taken (its post time, for ACCOUNT_MIN_GAP), set by the store."""

    slot: int | None
    retry_in: float = 0.0
    at: float = 0.0


def decide_take(slots: Sequence[Slot], last_post: float, now: float, *, max_concurrent: int,
                min_gap: float) -> TakeDecision:
    """May a new prompt take one of the account's slots at `now`? `slots` as stored (missing ones are
    free); `last_post`: epoch seconds of its last taken slot (0 = never)."""
    padded = [*slots[:max_concurrent], *[Slot()] * max(0, max_concurrent - len(slots))]
    gap_left = last_post + min_gap - now if last_post else 0.0
    free = [i for i, s in enumerate(padded) if s.free(now)]
    if free and gap_left <= 0:
        return TakeDecision(free[0])
    slot_in = 0.0 if free else min(s.expires_at for s in padded) - now
    return TakeDecision(None, max(slot_in, gap_left, 0.0))


def expected_wait(ahead: int, in_flight: int, capacity: int, cycle: float) -> float:
    """Seconds a newcomer is expected to wait: `ahead` requests queued before it, `in_flight` prompts
    holding slots, `capacity` slots in all (accounts × ACCOUNT_MAX_CONCURRENT), `cycle` seconds one
    prompt holds a slot (at least ACCOUNT_MIN_GAP). 0 when a slot is free for it right away."""
    if capacity <= 0:
        return math.inf
    before = ahead + in_flight - capacity + 1  # requests that must finish before a slot is ours
    if before <= 0:
        return 0.0
    return math.ceil(before / capacity) * cycle


class HoldEstimate:
    """Moving average of how long a prompt holds an account (post → reply over), in seconds."""

    def __init__(self, initial: float, weight: float = 0.2) -> None:
        self.value = initial
        self.weight = weight

    def add(self, seconds: float) -> None:
        if seconds >= 0:
            self.value += self.weight * (seconds - self.value)
