"""LeaseStore for one process (`cdp serve` with the in-memory store): the account's slots in a dict.

Single-threaded asyncio: `take` has no await between reading and writing, so it is atomic."""

from __future__ import annotations

from dataclasses import replace

from cdp.domain.fairness import Slot, TakeDecision, decide_take


class MemoryLeaseStore:
    def __init__(self) -> None:
        self._slots: dict[str, list[Slot]] = {}
        self._last_post: dict[str, float] = {}

    async def take(self, account: str, holder: str, now: float, *, max_concurrent: int, min_gap: float,
                   ttl: float) -> TakeDecision:
        slots = self._slots.setdefault(account, [])
        decision = decide_take(slots, self._last_post.get(account, 0.0), now,
                               max_concurrent=max_concurrent, min_gap=min_gap)
        if decision.slot is not None:
            slots.extend(Slot() for _ in range(decision.slot + 1 - len(slots)))
            slots[decision.slot] = Slot(holder, now + ttl)
            self._last_post[account] = now
            return replace(decision, at=now)
        return decision

    async def release(self, account: str, slot: int, holder: str) -> None:
        slots = self._slots.get(account, [])
        if slot < len(slots) and slots[slot].holder == holder:
            slots[slot] = Slot()

    async def renew(self, account: str, slot: int, holder: str, expires_at: float) -> bool:
        slots = self._slots.get(account, [])
        if slot < len(slots) and slots[slot].holder == holder:
            slots[slot] = Slot(holder, expires_at)
            return True
        return False

    def held(self, account: str, now: float) -> int:
        """Slots of `account` held at `now` (tests, status)."""
        return sum(not s.free(now) for s in self._slots.get(account, []))
