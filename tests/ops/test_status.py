"""GET /api/status over HTTP against a real `cdp serve` (FakeDiscord behind it)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from cdp.domain.secrets import fingerprint

from tests.support.stack import API_KEY, start_stack


@pytest.fixture(scope="module")
def stack(fake):
    s = start_stack("memory", fake)
    yield s
    s.stop()
    for secret in [fake.config.bot_token, *fake.config.user_tokens, API_KEY]:
        assert secret not in s.logs()


def status(stack, **headers) -> httpx.Response:
    return httpx.get(stack.url + "/api/status", headers=headers or {"Authorization": f"Bearer {API_KEY}"},
                     timeout=10)


def test_api_key_required(stack):
    r = httpx.get(stack.url + "/api/status", timeout=10)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert status(stack, Authorization="Bearer sk-wrong").status_code == 401
    assert status(stack, **{"proxy-secret": "sk-wrong"}).status_code == 401
    assert status(stack, **{"proxy-secret": API_KEY}).status_code == 200


def test_status_facts(stack, fake):
    body = status(stack).json()
    assert body["status"] == "ok" and body["mode"] == "discord" and body["store"] == "memory"
    assert body["gateway"]["state"] == "ready"
    accounts = {a["account"]: a for a in body["accounts"]}
    assert set(accounts) == {fingerprint(t) for t in fake.config.user_tokens}
    assert {a["health"] for a in accounts.values()} <= {"healthy", "unknown"}
    assert [b["coze_bot_id"] for b in body["bots"]] == fake.config.coze_bot_ids
    assert body["temporary_channels"]["count"] == 0 and body["requests_in_flight"] == 0
    text = status(stack).text
    for secret in [fake.config.bot_token, *fake.config.user_tokens]:
        assert secret not in text


def test_documented_in_openapi(stack):
    spec = httpx.get(stack.url + "/openapi.json", timeout=10).json()
    op = spec["paths"]["/api/status"]["get"]
    ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    schema = spec["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    assert {"gateway", "accounts", "temporary_channels", "requests_in_flight", "last_errors"} <= set(
        schema["properties"])
    assert "example" in schema
    assert "/interactions" in spec["paths"]


async def test_in_flight_channels_and_errors(stack, fake):
    client = stack.client()
    # one account refused by Discord once: the service marks it dead and logs an error
    fake.fail_next("POST", "/messages", 401, 0, "401: Unauthorized", count=1)
    slow = asyncio.create_task(client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi [[sim:slow_first_token seconds=3]]"}]))
    seen = None
    deadline = time.monotonic() + 10
    async with httpx.AsyncClient(timeout=10) as http:
        while time.monotonic() < deadline:
            r = await http.get(stack.url + "/api/status", headers={"Authorization": f"Bearer {API_KEY}"})
            body = r.json()
            if body["requests_in_flight"] >= 1 and body["temporary_channels"]["count"] >= 1:
                seen = body
                break
            await asyncio.sleep(0.1)
    assert seen is not None, "the request in flight and its channel never showed"
    channel = seen["temporary_channels"]["channels"][0]
    assert channel["delete_at"] is None and channel["request_id"].startswith("req_")
    answer = await slow
    assert answer.choices[0].message.content
    body = status(stack).json()
    assert body["requests_in_flight"] == 0 and body["requests_total"] >= 1
    assert any(a["health"] == "dead" for a in body["accounts"])
    assert body["accounts_by_health"].get("dead") == 1
    assert any("refused" in e["message"] for e in body["last_errors"])
