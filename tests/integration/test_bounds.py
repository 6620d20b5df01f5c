"""Bounded work per request (issue 10, item 5), in process against the fake Discord: what is refused
is refused before anything is posted, and a long prompt stops being posted once nobody waits for it.

The app is the real one (create_app over the real service and REST client); requests go through
httpx's ASGI transport, so bodies, status codes and the fake's messages are all real.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
from cdp.app.conversation import ChatSpec
from cdp.app.errors import ServiceError
from cdp.entry.api.app import create_app
from cdp.entry.api.runtime import Runtime
from cdp.entry.bootstrap import make_service, make_stores
from cdp.settings import load_settings

from tests.support.proc import settings_env

AUTH = {"Authorization": "Bearer sk-test-key-1"}
ORIGINAL_AUTH = {"proxy-secret": "sk-test-key-1"}


def posted(fake, marker: str) -> list[dict]:
    """Every message containing `marker` that a user account posted, in any channel."""
    ids = {c["id"] for c in fake.created_channels()} | {fake.config.channel_id}
    return [m for cid in ids for m in fake.messages(cid)
            if marker in (m.get("content") or "") and not m["author"].get("bot")]


class App:
    def __init__(self, fake, **env: str) -> None:
        self.settings = load_settings(**settings_env(fake, CDP_STORE="memory", **env))
        self.stores = make_stores(self.settings)
        self.service = make_service(self.settings, self.stores)
        self.app = create_app(Runtime(self.settings, self.service, stores=self.stores))

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://cdp", timeout=30)

    async def aclose(self) -> None:
        await self.service.aclose()
        await self.service.rest.aclose()


@pytest.fixture
async def app(fake):
    a = App(fake, REQUEST_MAX_BODY_BYTES="200000", PROMPT_MAX_MESSAGES="50", PROMPT_MAX_CHARS="30000")
    yield a
    await a.aclose()


def chat(content, **extra) -> dict:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": content}], **extra}


def error_of(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


async def test_a_prompt_over_prompt_max_parts_is_400_and_nothing_is_posted(app, fake):
    marker = uuid.uuid4().hex
    words = (marker + " ") + "word " * 5000  # 25,033 characters: 13 Discord messages, the cap is 10
    async with app.client() as c:
        r = await c.post("/v1/chat/completions", json=chat(words), headers={**AUTH, "out-time": "3"})
    err = error_of(r, 400)
    assert err["code"] == "prompt_too_long" and err["param"] == "messages" and "PROMPT_MAX_PARTS" in err["message"]
    assert posted(fake, marker) == []


async def test_whitespace_that_passes_the_token_check_is_refused_by_characters(app, fake):
    marker = uuid.uuid4().hex
    async with app.client() as c:  # 150,000 characters, few tokens: over PROMPT_MAX_CHARS (30,000)
        r = await c.post("/v1/chat/completions", json=chat(marker + " " * 150_000), headers={**AUTH, "out-time": "3"})
    err = error_of(r, 400)
    assert err["code"] == "prompt_too_long" and "PROMPT_MAX_CHARS" in err["message"]
    assert posted(fake, marker) == []


async def test_too_many_messages_is_400(app, fake):
    marker = uuid.uuid4().hex
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": f"{marker} {i}"} for i in range(51)]}
    async with app.client() as c:
        r = await c.post("/v1/chat/completions", json=body, headers={**AUTH, "out-time": "3"})
    assert error_of(r, 400)["code"] == "too_many_messages"
    assert posted(fake, marker) == []


async def test_bodies_over_the_limit_are_413_before_parsing(app):
    big = json.dumps(chat("x" * 300_000)).encode()

    async def chunks():  # no Content-Length: the limit holds while reading
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    async with app.client() as c:
        for content in (big, chunks()):
            r = await c.post("/v1/chat/completions", content=content,
                             headers={**AUTH, "Content-Type": "application/json"})
            assert error_of(r, 413)["code"] == "request_too_large"
        r = await c.post("/v1/images/generations", content=big, headers={**AUTH, "Content-Type": "application/json"})
        error_of(r, 413)
        r = await c.post("/api/channel/create", content=b"{" + b" " * (1024 * 1024 + 10) + b"}",
                         headers=ORIGINAL_AUTH)
        assert r.status_code == 413 and r.json()["success"] is False
        r = await c.post("/interactions", content=b"{" + b" " * (1024 * 1024 + 10) + b"}",
                         headers={"x-signature-ed25519": "00", "x-signature-timestamp": "1"})
        assert r.status_code == 413


@pytest.mark.parametrize("depth", [100, 10_000])
async def test_deeply_nested_json_is_400_not_500(app, depth):
    nested = "[" * depth + "]" * depth
    async with app.client() as c:
        for path, body in (("/v1/chat/completions", '{"model":"gpt-4o","messages":[{"role":"user","content":%s}]}'),
                           ("/v1/images/generations", '{"prompt":"a cat","user":%s}')):
            r = await c.post(path, content=(body % nested).encode(),
                             headers={**AUTH, "Content-Type": "application/json"})
            assert "nests deeper" in error_of(r, 400)["message"]
        r = await c.post("/api/channel/create", content=('{"name":' + nested + '}').encode(), headers=ORIGINAL_AUTH)
        assert r.status_code == 200 and r.json()["success"] is False and "nests deeper" in r.json()["detail"]


async def test_posting_a_long_prompt_stops_when_the_client_leaves(app, fake):
    marker = uuid.uuid4().hex
    text = (marker + "\n") * 180  # ~6,000 characters: 4 Discord messages
    asked = 0

    async def gone() -> bool:
        nonlocal asked
        asked += 1
        return asked >= 2  # the client leaves after the second part

    spec = ChatSpec(request_id="req_gone", model="gpt-4o", messages=[{"role": "user", "content": text}],
                    stream=False, api_key="sk-test-key-1")
    with pytest.raises(ServiceError) as info:
        await app.service.start(spec, client_gone=gone)
    assert info.value.code == "prompt_interrupted" and not info.value.retryable
    assert "after 2 of 4 parts" in info.value.message
    assert len(posted(fake, marker)) == 2


async def test_posting_a_long_prompt_stops_at_the_request_deadline(app, fake):
    marker = uuid.uuid4().hex
    spec = ChatSpec(request_id="req_late", model="gpt-4o", stream=False, api_key="sk-test-key-1",
                    messages=[{"role": "user", "content": (marker + "\n") * 180}], timeout=0.001)
    await asyncio.sleep(0)
    with pytest.raises(ServiceError) as info:
        await app.service.start(spec)
    assert info.value.code == "prompt_interrupted" and "timeout" in info.value.message
    assert len(posted(fake, marker)) == 1  # the first part goes (it was due), no more
