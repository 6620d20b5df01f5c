"""Operator alerts (Telegram: NOTIFY_TELEGRAM_BOT_TOKEN + NOTIFY_TELEGRAM_USER_ID), as in the original.

Kinds: no usable user token left, a user token died, the CDP bot looks risk-controlled (channel
creation keeps failing). At most one alert per kind (and subject, e.g. the dead token's fingerprint)
per day in TZ, deduplicated through the AlertStore so several processes send one alert.

Fire and forget: `notify` schedules the sending and returns at once; a failure (Telegram down,
timeout, bad token) is logged and never reaches the request that noticed the problem. The sending
itself is the Notifier port's (cdp.adapters.telegram).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from zoneinfo import ZoneInfo

from cdp.ports import AlertStore, Notifier

log = logging.getLogger("cdp.app.alerts")

NO_ACCOUNT = "no_usable_account"
ACCOUNT_DEAD = "account_dead"
BOT_RISK = "bot_risk_controlled"


class Alerts:
    """One alert per kind (and subject) per day, sent through the notifier in the background."""

    def __init__(self, notifier: Notifier, store: AlertStore, *, tz: str = "UTC",
                 clock: Callable[[], float] = time.time) -> None:
        self.notifier = notifier
        self.store = store
        self.tz = tz
        self.clock = clock
        self._tasks: set[asyncio.Task] = set()

    @property
    def enabled(self) -> bool:
        return self.notifier.enabled

    def day(self) -> str:
        return dt.datetime.fromtimestamp(self.clock(), ZoneInfo(self.tz)).date().isoformat()

    def notify(self, kind: str, text: str, subject: str = "") -> None:
        """Send in the background (never raises, never blocks the caller)."""
        if not self.enabled:
            return
        try:
            task = asyncio.get_running_loop().create_task(self.send(kind, text, subject))
        except RuntimeError:  # no running loop: nothing to schedule on
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def send(self, kind: str, text: str, subject: str = "") -> bool:
        """Send now unless already sent today; True if Telegram accepted it. Never raises."""
        if not self.enabled:
            return False
        key = f"{kind}:{subject}" if subject else kind
        try:
            day = self.day()
            if not await self.store.claim(key, day):
                log.debug("alert already sent today", extra={"alert": key})
                return False
        except Exception:
            log.warning("alert dedupe store failed; alert not sent", extra={"alert": key}, exc_info=True)
            return False
        ok = await self.notifier.send(f"[coze-discord-proxy] {text}", key)
        if not ok:
            try:
                await self.store.release(key, day)
            except Exception:
                pass
        return ok

    async def aclose(self) -> None:
        """Give pending alerts a moment to leave (shutdown)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)
