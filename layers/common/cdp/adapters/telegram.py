"""Telegram as the alerts' Notifier: sendMessage to one user through the Bot API (httpx).

The bot token is part of the URL, so error texts from the HTTP client are never logged, only its type.
"""

from __future__ import annotations

import asyncio
import logging

import httpx

from cdp.domain.secrets import fingerprint
from cdp.settings import Settings

log = logging.getLogger("cdp.adapters.telegram")

SEND_TIMEOUT = 10.0


class TelegramNotifier:
    def __init__(self, *, bot_token: str, user_id: str, api_base: str = "", proxy_url: str | None = None,
                 timeout: float = SEND_TIMEOUT) -> None:
        self._token = (bot_token or "").strip()
        self.user_id = (user_id or "").strip()
        self.api_base = (api_base or "https://api.telegram.org").rstrip("/")
        self.proxy_url = proxy_url or None
        self.timeout = timeout

    @classmethod
    def from_settings(cls, settings: Settings) -> TelegramNotifier:
        return cls(bot_token=settings.NOTIFY_TELEGRAM_BOT_TOKEN, user_id=settings.NOTIFY_TELEGRAM_USER_ID,
                   api_base=settings.TELEGRAM_API_BASE, proxy_url=settings.PROXY_URL or None)

    @property
    def enabled(self) -> bool:
        return bool(self._token and self.user_id)

    async def send(self, text: str, key: str) -> bool:
        """Post `text` to the user; True if Telegram accepted it. Never raises (`key` names it in logs)."""
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
