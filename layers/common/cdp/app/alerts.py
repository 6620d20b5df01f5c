"""Telegram alerts (NOTIFY_TELEGRAM_BOT_TOKEN + NOTIFY_TELEGRAM_USER_ID), as in the original.

Kinds: no usable user token left, a user token died, the CDP bot looks risk-controlled (channel
creation keeps failing). At most one alert per kind (and subject, e.g. the dead token's fingerprint)
per day in TZ, deduplicated through the AlertStore so several processes send one alert.

Fire and forget: `notify` schedules the sending and returns at once; a failure (Telegram down,
timeout, bad token) is logged and never reaches the request that noticed the problem. The Telegram
bot token is part of the URL, so error texts from the HTTP client are never logged, only its type.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from zoneinfo import ZoneInfo

import httpx

from cdp.domain.secrets import fingerprint
from cdp.ports import AlertStore
from cdp.settings import Settings

log = logging.getLogger("cdp.app.alerts")

NO_ACCOUNT = "no_usable_account"
ACCOUNT_DEAD = "account_dead"
BOT_RISK = "bot_risk_controlled"
SEND_TIMEOUT = 10.0


class Alerts:
    def __init__(self, *, bot_token: str, user_id: str, api_base: str, store: AlertStore, tz: str = "UTC",
                 proxy_url: str | None = None, clock: Callable[[], float] = time.time,
                 timeout: float = SEND_TIMEOUT) -> None:
        self._token = (bot_token or "").strip()
        self.user_id = (user_id or "").strip()
        self.api_base = (api_base or "https://api.telegram.org").rstrip("/")
        self.store = store
        self.tz = tz
        self.proxy_url = proxy_url or None
        self.clock = clock
        self.timeout = timeout
        self._tasks: set[asyncio.Task] = set()

    @classmethod
    def from_settings(cls, settings: Settings, store: AlertStore) -> Alerts:
        return cls(bot_token=settings.NOTIFY_TELEGRAM_BOT_TOKEN, user_id=settings.NOTIFY_TELEGRAM_USER_ID,
                   api_base=settings.TELEGRAM_API_BASE,
                   store=store, tz=settings.TZ, proxy_url=settings.PROXY_URL or None)

    @property
    def enabled(self) -> bool:
        return bool(self._token and self.user_id)

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
        ok = await self._post(f"[coze-discord-proxy] {text}", key)
        if not ok:
            try:
                await self.store.release(key, day)
            except Exception:
                pass
        return ok

    async def _post(self, text: str, key: str) -> bool:
        url = f"{self.api_base}/bot{self._token}/sendMessage"
        try:
            async with httpx.AsyncClient(timeout=self.timeout, proxy=self.proxy_url) as client:
                resp = await asyncio.wait_for(
                    client.post(url, json={"chat_id": self.user_id, "text": text,
                                           "disable_web_page_preview": True}),
                    self.timeout)
        except (TimeoutError, Exception) as exc:  # the message may contain the URL (token)
            log.warning("telegram alert failed", extra={"alert": key, "error": type(exc).__name__,
                                                         "telegram_bot": fingerprint(self._token)})
            return False
        if resp.status_code != 200:
            log.warning("telegram refused the alert", extra={"alert": key, "status": resp.status_code,
                                                              "telegram_bot": fingerprint(self._token)})
            return False
        log.info("telegram alert sent", extra={"alert": key})
        return True

    async def aclose(self) -> None:
        """Give pending alerts a moment to leave (shutdown)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)
