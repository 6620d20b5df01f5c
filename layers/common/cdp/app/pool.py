"""The pool of Discord user accounts (USER_AUTHORIZATION) and the health of the Coze bots.

Health lives in the HealthStore (memory for `cdp serve`, DynamoDB when shared), keyed by token
fingerprint, so it survives restarts and every process sees the same state; rules come from
cdp.domain.accounts. A Coze limit text rests what caused it (`rest_after_limit`). Tokens never leave this module other than to the caller that posts with
them; logs and status only show fingerprints.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from zoneinfo import ZoneInfo

from cdp.app.alerts import ACCOUNT_DEAD, NO_ACCOUNT, Alerts
from cdp.domain.accounts import (
    KIND_ACCOUNT,
    KIND_BOT,
    Health,
    HealthRecord,
    choose_least_recently_used,
    counts,
    earliest_rest_end,
    next_reset,
    retry_after_seconds,
)
from cdp.domain.coze import CozeErrorKind
from cdp.domain.secrets import fingerprint
from cdp.ports import HealthStore

log = logging.getLogger("cdp.app.pool")

CLAIM_ATTEMPTS = 5
ALL_DEAD_RETRY_AFTER = 3600
LIMIT_KINDS = frozenset({CozeErrorKind.USER_LIMIT, CozeErrorKind.BOT_LIMIT})


class NoUsableAccount(Exception):
    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


def _iso(ts: float | None, tz: str) -> str | None:
    if not ts:
        return None
    return dt.datetime.fromtimestamp(ts, ZoneInfo(tz)).isoformat(timespec="seconds")


class _Health:
    """Shared by accounts and bots: load records of one kind, with a local fallback."""

    kind = ""

    def __init__(self, store: HealthStore, *, tz: str, reset_time: str,
                 clock: Callable[[], float] = time.time, alerts: Alerts | None = None) -> None:
        self.store = store
        self.tz = tz
        self.reset_time = reset_time
        self.clock = clock
        self.alerts = alerts
        self._local: dict[str, HealthRecord] = {}  # last known, used if the store fails

    async def _load(self) -> dict[str, HealthRecord]:
        try:
            stored = await self.store.load(self.kind)
        except Exception:
            log.warning("health store unavailable; using this process's last known health",
                        extra={"kind": self.kind}, exc_info=True)
            return dict(self._local)
        self._local.update(stored)
        return stored

    async def _save(self, record: HealthRecord) -> None:
        self._local[record.key] = record
        try:
            await self.store.save_health(self.kind, record)
        except Exception:
            log.warning("could not store health; kept in this process only",
                        extra={"kind": self.kind, "key": record.key}, exc_info=True)

    def rest_end(self) -> float:
        return next_reset(self.clock(), self.tz, self.reset_time)

    def describe(self, r: HealthRecord, now: float) -> dict:
        health = r.effective(now)
        return {"health": health.value,
                "last_used": _iso(r.last_used, self.tz),
                "resting_until": _iso(r.resting_until, self.tz) if health == Health.RESTING else None,
                "dead_since": _iso(r.dead_since, self.tz) if health == Health.DEAD else None,
                "reason": r.reason if health != Health.HEALTHY else None}


class AccountPool(_Health):
    """Picks the least recently used healthy account; marks accounts dead or resting."""

    kind = KIND_ACCOUNT

    def __init__(self, tokens: list[str], store: HealthStore, **kw) -> None:
        super().__init__(store, **kw)
        self._tokens: dict[str, str] = {}
        for t in tokens:
            self._tokens.setdefault(fingerprint(t), t)

    @property
    def fingerprints(self) -> list[str]:
        return list(self._tokens)

    def token_of(self, fp: str) -> str | None:
        """The token of the account with this fingerprint (None if it is not configured)."""
        return self._tokens.get(fp)

    async def records(self) -> list[HealthRecord]:
        """Configured accounts only, in settings order (unknown ones are healthy, never used)."""
        stored = await self._load()
        return [stored.get(fp) or HealthRecord(fp) for fp in self._tokens]

    async def acquire(self, exclude: set[str] = frozenset()) -> tuple[str, str]:
        """(token, fingerprint) of the account to post with. Raises NoUsableAccount."""
        pick: HealthRecord | None = None
        for _ in range(CLAIM_ATTEMPTS):
            now = self.clock()
            recs = await self.records()
            pick = choose_least_recently_used(recs, now, exclude)
            if pick is None:
                raise self._none_left(recs, now, bool(exclude))
            try:
                if await self.store.claim(self.kind, pick.key, pick.last_used, now):
                    return self._tokens[pick.key], pick.key
            except Exception:
                log.warning("health store unavailable; using the account unclaimed",
                            extra={"account": pick.key}, exc_info=True)
                return self._tokens[pick.key], pick.key
        assert pick is not None  # lost every race: use the last pick anyway (a fair rule, not a lock)
        return self._tokens[pick.key], pick.key

    async def candidates(self, exclude: set[str] = frozenset()) -> list[HealthRecord]:
        """Healthy accounts not in `exclude`, least recently used first (cdp.app.queue tries them in
        this order). Raises NoUsableAccount when there is none."""
        now = self.clock()
        recs = await self.records()
        out = [r for r in recs if r.key not in exclude and r.effective(now) == Health.HEALTHY]
        if not out:
            raise self._none_left(recs, now, bool(exclude))
        return sorted(out, key=lambda r: r.last_used)  # stable: ties keep settings order

    async def use(self, record: HealthRecord) -> str:
        """The token of `record`'s account, its last_used set to now (best effort: the queue's lease,
        not this claim, is what keeps two requests off one account)."""
        try:
            await self.store.claim(self.kind, record.key, record.last_used, self.clock())
        except Exception:
            log.warning("health store unavailable; last use not recorded", extra={"account": record.key},
                        exc_info=True)
        return self._tokens[record.key]

    def _none_left(self, recs: list[HealthRecord], now: float, tried: bool) -> NoUsableAccount:
        by = counts(recs, now)
        if not recs:
            return NoUsableAccount("No Discord user account is configured (USER_AUTHORIZATION).",
                                   ALL_DEAD_RETRY_AFTER)
        if by[Health.RESTING] == 0 and by[Health.HEALTHY] == 0:
            msg = ("No usable Discord user account is left: every USER_AUTHORIZATION token was refused by "
                   "Discord (invalid, or the account must be verified). Replace the tokens.")
            self._alert(NO_ACCOUNT, f"No usable Discord user token is left: all {len(recs)} "
                                    "USER_AUTHORIZATION tokens were refused by Discord. Replace them.")
            return NoUsableAccount(msg, ALL_DEAD_RETRY_AFTER)
        if by[Health.HEALTHY] == 0:
            end = earliest_rest_end(recs, now)
            wait = retry_after_seconds(recs, now)
            msg = (f"Every Discord user account reached Coze's daily limit; the first one is usable again "
                   f"at {_iso(end, self.tz)} (in {wait} s).")
            self._alert(NO_ACCOUNT, f"No usable Discord user token right now: {by[Health.RESTING]} resting "
                                    f"until the daily reset, {by[Health.DEAD]} dead.")
            return NoUsableAccount(msg, wait)
        # healthy ones exist but this request already tried them
        return NoUsableAccount("Every usable Discord user account was refused for this request; retry.",
                               max(1, retry_after_seconds(recs, now, fallback=5)))

    def _alert(self, kind: str, text: str, subject: str = "") -> None:
        if self.alerts is not None:
            self.alerts.notify(kind, text, subject)

    async def mark_dead(self, fp: str, reason: str) -> None:
        recs = {r.key: r for r in await self.records()}
        current = recs.get(fp) or HealthRecord(fp)
        if current.health == Health.DEAD:
            return
        log.error("user token refused by Discord; it is not used again",
                  extra={"account": fp, "reason": reason})
        await self._save(current.dead(self.clock(), reason))
        self._alert(ACCOUNT_DEAD, f"Discord user token {fp} is dead ({reason}); it is no longer used. "
                                  "Replace it in USER_AUTHORIZATION.", subject=fp)
        now = self.clock()
        left = [r for k, r in recs.items() if k != fp and r.effective(now) == Health.HEALTHY]
        if not left:
            self._none_left([*[r for k, r in recs.items() if k != fp], current.dead(now, reason)], now, False)

    async def rest(self, fp: str, reason: str) -> None:
        recs = {r.key: r for r in await self.records()}
        current = recs.get(fp) or HealthRecord(fp)
        until = self.rest_end()
        log.warning("user account rests until the daily reset",
                    extra={"account": fp, "reason": reason, "resting_until": _iso(until, self.tz)})
        await self._save(current.resting(until, reason))

    async def status(self) -> dict:
        now = self.clock()
        recs = await self.records()
        return {"by_health": counts(recs, now),
                "accounts": [{"account": r.key, **self.describe(r, now)} for r in recs]}


class BotHealth(_Health):
    """Coze bots resting after a "developer's credits exhausted" reply."""

    kind = KIND_BOT

    async def resting(self) -> set[str]:
        now = self.clock()
        return {k for k, r in (await self._load()).items() if r.effective(now) != Health.HEALTHY}

    async def rest_end_of(self, bot_ids: list[str]) -> int:
        now = self.clock()
        stored = await self._load()
        return retry_after_seconds([stored[b] for b in bot_ids if b in stored], now)

    async def rest(self, bot_id: str, reason: str) -> None:
        stored = await self._load()
        until = self.rest_end()
        log.warning("Coze bot rests until the daily reset",
                    extra={"coze_bot_id": bot_id, "reason": reason, "resting_until": _iso(until, self.tz)})
        await self._save((stored.get(bot_id) or HealthRecord(bot_id)).resting(until, reason))

    async def status(self, bot_ids: list[str]) -> dict:
        now = self.clock()
        stored = await self._load()
        recs = [stored.get(b) or HealthRecord(b) for b in bot_ids]
        return {"by_health": counts(recs, now),
                "bots": [{"coze_bot_id": r.key, **self.describe(r, now)} for r in recs]}


async def rest_after_limit(kind: str, pool: AccountPool, bots: BotHealth, *, account: str,
                           coze_bot_id: str) -> str:
    """Coze answered with a limit text: rest the account that posted the prompt (user limit) or the
    Coze bot (bot limit) until the next daily reset. Used by the conversation and by the
    replies-stream consumer (which runs even when the client has gone).

    Returns "account" / "bot" when one was rested, "unknown" when the one to rest is not known
    (empty fingerprint or bot id), "" for other error kinds.
    """
    if kind == CozeErrorKind.USER_LIMIT:
        if not account:
            return "unknown"
        await pool.rest(account, "coze daily limit for this user")
        return "account"
    if kind == CozeErrorKind.BOT_LIMIT:
        if not coze_bot_id:
            return "unknown"
        await bots.rest(coze_bot_id, "coze bot developer limit")
        return "bot"
    return ""
