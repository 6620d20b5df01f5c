"""Admin versus chat keys (PROXY_ADMIN_SECRET) over HTTP, and a representative run (chat, stream,
errors, operator routes, secrets pasted into prompts) whose every log line is searched for every
secret and its base64 form (Stack.stop does the search)."""

from __future__ import annotations

import base64

import httpx
import openai
import pytest

from tests.support.stack import API_KEY, assert_no_secret_in, secret_values, start_stack
from tests.support.telegram import FakeTelegram

ADMIN_KEY = "sk-admin-key-0987654321"
TG_TOKEN = "246810:tg-keys-secret-abc"


@pytest.fixture(scope="module")
def stack(fake):
    with FakeTelegram() as tg:
        s = start_stack("memory", fake, PROXY_ADMIN_SECRET=ADMIN_KEY, NOTIFY_TELEGRAM_BOT_TOKEN=TG_TOKEN,
                        NOTIFY_TELEGRAM_USER_ID="777", TELEGRAM_API_BASE=tg.url, LOG_LEVEL="DEBUG")
        yield s
        s.stop()  # every log line, every secret, raw and base64
        assert_no_secret_in(s.logs(), [ADMIN_KEY, TG_TOKEN, API_KEY, fake.config.bot_token])


def get(stack, path: str, **headers: str) -> httpx.Response:
    return httpx.get(stack.url + path, headers=headers, timeout=15)


def test_a_chat_key_never_reads_status_nor_deletes_channels(stack, fake):
    r = get(stack, "/api/status", Authorization=f"Bearer {API_KEY}")
    assert r.status_code == 403 and r.json()["error"]["code"] == "admin_key_required"
    assert "PROXY_ADMIN_SECRET" in r.json()["error"]["message"]
    assert get(stack, "/api/status", **{"proxy-secret": API_KEY}).status_code == 403
    assert get(stack, "/api/status").status_code == 401
    assert get(stack, "/api/status", Authorization=f"Bearer {ADMIN_KEY}").status_code == 200

    created = httpx.post(stack.url + "/api/channel/create", json={"name": "keys-test"},
                         headers={"proxy-secret": API_KEY}, timeout=15)  # a chat key may create
    assert created.status_code == 200 and created.json()["success"], created.text
    cid = created.json()["data"]["id"]
    for path in (f"/api/channel/del/{cid}", "/api/channel/del/all/cdp"):
        r = get(stack, path, **{"proxy-secret": API_KEY})
        assert r.status_code == 403 and r.json()["success"] is False
        assert "PROXY_ADMIN_SECRET" in r.json()["detail"]
    assert any(c["id"] == cid for c in fake.channels())  # nothing was deleted
    r = get(stack, f"/api/channel/del/{cid}", **{"proxy-secret": ADMIN_KEY})
    assert r.status_code == 200 and r.json()["success"] is True
    assert not any(c["id"] == cid for c in fake.channels())


async def test_representative_requests_leave_no_secret_in_the_logs(stack, fake):
    cfg = fake.config
    user_token = next(iter(cfg.user_tokens))
    pasted = (f"my token is {user_token}, bot {cfg.bot_token}, key {API_KEY}, admin {ADMIN_KEY}, "
              f"b64 {base64.b64encode(user_token.encode()).decode()}")
    async with stack.client() as client:
        reply = await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": pasted}])
        assert reply.choices[0].message.content
        stream = await client.chat.completions.create(model="gpt-4o", stream=True,
                                                      messages=[{"role": "user", "content": "stream " + pasted}])
        assert [c async for c in stream]
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}],
                                                 extra_body={"channelId": user_token})
    async with stack.client(api_key=ADMIN_KEY) as admin:  # an admin key chats too
        assert (await admin.models.list()).data
    for key in (cfg.bot_token, user_token, "sk-wrong"):
        r = httpx.post(stack.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                       json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, timeout=15)
        assert r.status_code == 401
    r = httpx.post(stack.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"},
                   content=b'{"model": "gpt-4o", "messages": [' + user_token.encode(), timeout=15)
    assert r.status_code == 400
    assert get(stack, f"/api/channel/del/{cfg.channel_id}99", **{"proxy-secret": ADMIN_KEY}).json()["success"] is False
    assert get(stack, "/api/status", Authorization=f"Bearer {ADMIN_KEY}").status_code == 200
    stack.fake.fail_next("POST", f"/guilds/{cfg.guild_id}/channels", 403, 50013, "Missing Permissions " + user_token)
    async with stack.client() as client:
        with pytest.raises(openai.APIStatusError):
            await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    # the run logged plenty (DEBUG), and secrets nowhere in it; the stack's teardown checks again
    log = stack.api.log()
    assert len(log.splitlines()) > 10 and "tok:" in log, log
    assert_no_secret_in(log, secret_values(stack.api.env))
    assert set(secret_values(stack.api.env)) >= {ADMIN_KEY, TG_TOKEN, API_KEY, user_token, cfg.bot_token}
