"""Health of the Discord user accounts (USER_AUTHORIZATION tokens) and of the Coze bots. Pure rules.

States, kept in the store by key (an account's key is its token fingerprint, a bot's key its id):

- healthy: usable.
- resting: Coze said "daily limit" (account) or "developer's credits exhausted" (bot); usable again at
  `resting_until` (the next daily reset, see `next_reset`). Nothing has to run at the reset: a rest
  whose time has passed simply reads as healthy.
- dead: Discord answered 401 or "You need to verify your account". Never used again. Because the key
  is the token's fingerprint, a new token (a settings change) starts healthy; putting the same token
  back does not revive it (fix the account first, then it is a different token anyway after a reset).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from zoneinfo import ZoneInfo

KIND_ACCOUNT = "account"
KIND_BOT = "bot"


class Health(StrEnum):
    HEALTHY = "healthy"
    RESTING = "resting"
    DEAD = "dead"


@dataclass(frozen=True)
class HealthRecord:
    """What the store keeps for one account or bot."""

    key: str  # token fingerprint (accounts) or Coze bot id (bots)
    health: Health = Health.HEALTHY
    last_used: float = 0.0  # epoch seconds; 0 = never
    resting_until: float | None = None
    dead_since: float | None = None
    reason: str = ""

    def effective(self, now: float) -> Health:
        """Health at `now`: a rest whose time has passed is over."""
        if self.health == Health.RESTING and (self.resting_until is None or self.resting_until <= now):
            return Health.HEALTHY
        return self.health

    def resting(self, until: float, reason: str) -> HealthRecord:
        if self.health == Health.DEAD:
            return self
        return replace(self, health=Health.RESTING, resting_until=until, reason=reason)

    def dead(self, since: float, reason: str) -> HealthRecord:
        if self.health == Health.DEAD:
            return self
        return replace(self, health=Health.DEAD, dead_since=since, resting_until=None, reason=reason)


def parse_reset_time(value: str) -> dt.time:
    """"HH:MM" (24 h) → time. Raises ValueError with a readable message."""
    try:
        hh, mm = value.strip().split(":")
        return dt.time(int(hh), int(mm))
    except (ValueError, TypeError):
        raise ValueError("must be a time of day as HH:MM (24-hour), e.g. 00:00") from None


def next_reset(now: float, tz: str, reset_time: str = "00:00") -> float:
    """Epoch seconds of the next daily reset (`reset_time` in time zone `tz`) strictly after `now`."""
    zone = ZoneInfo(tz)
    at = parse_reset_time(reset_time)
    local = dt.datetime.fromtimestamp(now, zone)
    candidate = local.replace(hour=at.hour, minute=at.minute, second=0, microsecond=0)
    if candidate.timestamp() <= now:
        # next calendar day, same wall-clock time (DST-safe: build the date, then localise)
        day = local.date() + dt.timedelta(days=1)
        candidate = dt.datetime.combine(day, at, tzinfo=zone)
    return candidate.timestamp()


def choose_least_recently_used(records: Iterable[HealthRecord], now: float,
                               exclude: Iterable[str] = ()) -> HealthRecord | None:
    """The healthy record used longest ago (never used first); ties go to the first in order.

    Why least recently used: every account gets the same share of the traffic (round robin in
    effect) and an account that just came back from a rest or was added is used first, so Coze's
    per-account daily budgets are drained evenly and a limit hits as late as possible. Random choice
    (the original) gives the same average but bunches requests on one account by chance. The order
    is decided from `last_used` in the shared store, so several processes share one rotation.
    """
    skip = set(exclude)
    best: HealthRecord | None = None
    for r in records:
        if r.key in skip or r.effective(now) != Health.HEALTHY:
            continue
        if best is None or r.last_used < best.last_used:
            best = r
    return best


def earliest_rest_end(records: Iterable[HealthRecord], now: float) -> float | None:
    """When the first resting record becomes usable again; None if none is resting."""
    ends = [r.resting_until for r in records
            if r.effective(now) == Health.RESTING and r.resting_until is not None]
    return min(ends) if ends else None


def retry_after_seconds(records: Iterable[HealthRecord], now: float, fallback: int = 3600) -> int:
    """Seconds a client should wait when nothing is usable (at least 1)."""
    end = earliest_rest_end(records, now)
    if end is None:
        return fallback
    return max(1, int(end - now + 0.999))


def counts(records: Iterable[HealthRecord], now: float) -> dict[str, int]:
    out = {h.value: 0 for h in Health}
    for r in records:
        out[r.effective(now).value] += 1
    return out
