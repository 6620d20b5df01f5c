"""Telegram alerts against a local fake Telegram (real HTTP on loopback): the CDP bot looks
risk-controlled (channel creation keeps failing), at most once per day, and a failing or slow
Telegram never fails or slows a request. Dead-token and no-token alerts: test_bots_accounts.py."""

from __future__ import annotations

import time

import openai
import pytest
from cdp.app.alerts import BOT_RISK

from tests.support.aws import wait_until
from tests.support.stack import MODES, start_stack
from tests.support.telegram import FakeTelegram

TG_TOKEN = "987654:tg-alert-secret-xyz"


@pytest.fixture(params=MODES)
def alerting(request, fake):
    with FakeTelegram() as tg:
        s = start_stack(request.param, fake, NOTIFY_TELEGRAM_BOT_TOKEN=TG_TOKEN, NOTIFY_TELEGRAM_USER_ID="777",
                        TELEGRAM_API_BASE=tg.url)
        s.telegram = tg
        try:
            yield s
        finally:
            s.stop()
            assert TG_TOKEN not in s.logs() and "tg-alert-secret" not in s.logs()


async def fail_channel_creation(stack) -> float:
    """One chat request whose channel creation Discord refuses; returns how long it took."""
    stack.fake.fail_next("POST", f"/guilds/{stack.fake.config.guild_id}/channels", 403, 50013,
                         "Missing Permissions")
    started = time.monotonic()
    async with stack.client() as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 502
    return time.monotonic() - started


async def test_risk_control_alert_once_a_day_and_never_in_the_way(alerting):
    tg = alerting.telegram
    tg.status, tg.delay_seconds = 500, 2.0  # Telegram down and slow
    took = [await fail_channel_creation(alerting) for _ in range(3)]
    assert took[-1] < 1.5  # the alert (Telegram: 2 s, then 500) is sent in the background
    time.sleep(2.5)
    assert tg.texts() == []  # refused by Telegram: not recorded as sent...
    tg.status, tg.delay_seconds = 200, 0.0
    await fail_channel_creation(alerting)  # ...so the next failure tries again
    text = tg.wait_for("risk")
    assert "CDP bot" in text and tg.messages[0]["token"] == TG_TOKEN and str(tg.messages[0]["chat_id"]) == "777"
    for _ in range(2):
        await fail_channel_creation(alerting)
    wait_until(lambda: sum(1 for line in alerting.logs().splitlines()  # both claims refused
                           if "alert already sent today" in line and BOT_RISK in line) == 2)
    assert len([t for t in tg.texts() if "risk" in t]) == 1  # at most once per day
    # and requests work again once Discord does
    async with alerting.client() as client:
        r = await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "ok?"}])
    assert r.choices[0].message.content
