"""POST /v1/images/generations through the real wire: openai SDK → cdp → fake Discord → simulated Coze,
and the re-hosted images (GET /files/...) outliving the temporary channel."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid

import httpx
import openai
import pytest
from cdp.domain.images import DRAW_INSTRUCTION

from tests.support.stack import API_KEY, prompt_messages

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def marker() -> str:
    return "m" + uuid.uuid4().hex[:12]


def channel_of(fake, m: str) -> str:
    msgs = prompt_messages(fake, m)
    assert msgs, f"no prompt with {m} was posted"
    return msgs[-1]["channel_id"]


async def wait_deleted(fake, channel_id: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(c["id"] == channel_id for c in fake.deleted_channels()):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"channel {channel_id} was not deleted")


async def test_url_outlives_the_temporary_channel(stack):
    m = marker()
    async with stack.client() as client:
        resp = await client.images.generate(model="dall-e-3", prompt=f"a red fox {m} [[sim:image_attachment]]",
                                            size="1024x1024", quality="hd", style="vivid")
    assert len(resp.data) == 1 and resp.created > 0
    url = resp.data[0].url
    assert url.startswith(stack.url + "/files/") and resp.data[0].b64_json is None
    assert resp.data[0].revised_prompt == "Here is the image you asked for."
    # The prompt carries the original's drawing instruction, then the caller's prompt.
    posted = prompt_messages(stack.fake, m)[-1]["content"]
    assert posted.startswith(DRAW_INSTRUCTION + "a red fox " + m)
    # Coze's attachment lived in the temporary channel; once that is gone, Discord's URL is dead ...
    cid = channel_of(stack.fake, m)
    coze = set(stack.fake.config.coze_bot_ids)
    discord_urls = [a["url"] for x in stack.fake.messages(cid) if x["author"]["id"] in coze
                    for a in x.get("attachments") or []]
    assert len(discord_urls) == 1
    await wait_deleted(stack.fake, cid)
    async with httpx.AsyncClient() as http:
        assert (await http.get(discord_urls[0])).status_code == 404
        # ... and ours still serves the image.
        r = await http.get(url)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert r.content.startswith(PNG_MAGIC)
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_b64_json_is_plain_base64_of_a_png(stack):
    m = marker()
    async with stack.client() as client:
        resp = await client.images.generate(prompt=f"a lighthouse at dawn {m}", response_format="b64_json")
    item = resp.data[0]
    assert item.url is None
    assert not item.b64_json.startswith("data:")
    assert base64.b64decode(item.b64_json, validate=True).startswith(PNG_MAGIC)
    assert item.revised_prompt.startswith("I drew a lighthouse at dawn")


async def test_embed_image_and_n_two(stack):
    m = marker()
    before = len(stack.fake.created_channels())
    async with stack.client() as client:
        resp = await client.images.generate(prompt=f"two cats {m} [[sim:image_embed]]", n=2)
    assert len(resp.data) == 2
    assert len({d.url for d in resp.data}) == 2  # each re-hosted under its own name
    assert len(stack.fake.created_channels()) - before == 2  # one conversation per image
    async with httpx.AsyncClient() as http:
        for d in resp.data:
            assert (await http.get(d.url)).content.startswith(PNG_MAGIC)


async def test_no_image_in_the_reply_is_a_clear_error(stack):
    async with stack.client() as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.images.generate(prompt=f'{marker()} [[sim:text="I only talk, I do not draw."]]')
    assert info.value.status_code == 502
    assert info.value.code == "no_image_generated"
    assert info.value.response.headers["x-should-retry"] == "false"


async def test_coze_error_texts_become_errors(stack):
    # (Limit texts would rest this module's accounts/bot: their mapping is tested in test_chat.py.)
    async with stack.client() as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.images.generate(prompt=f"{marker()} [[sim:error=other n=1]]")
    assert info.value.status_code == 502 and info.value.code == "coze_error"
    assert info.value.response.headers["x-should-retry"] == "false"
    assert "error occurred" not in info.value.message  # our own words, not Coze's text


@pytest.mark.parametrize("body,param", [
    ({}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": "x" * 4001}, "prompt"),
    ({"prompt": "a cat", "n": 0}, "n"),
    ({"prompt": "a cat", "n": 50}, "n"),
    ({"prompt": "a cat", "response_format": "png"}, "response_format"),
    ({"prompt": "a cat", "channelId": "general"}, "channelId"),
    ({"prompt": "a cat", "channelId": "12345678901234"}, "channelId"),
])
def test_bad_image_requests_are_400_and_post_nothing(stack, body, param):
    before = len(stack.fake.created_channels())
    r = httpx.post(stack.url + "/v1/images/generations", json=body, headers=AUTH, timeout=10)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and (err["param"] or "").startswith(param)
    assert len(stack.fake.created_channels()) == before


def test_images_need_the_key_and_files_are_not_listed(stack):
    r = httpx.post(stack.url + "/v1/images/generations", json={"prompt": "a cat"}, timeout=10)
    assert r.status_code == 401
    for name in ["0" * 32 + ".png", "..%2F..%2Fetc%2Fpasswd", "index.html", "abc.png"]:
        r = httpx.get(f"{stack.url}/files/{name}", timeout=10)
        assert r.status_code == 404 and r.json()["error"]["code"] in ("file_not_found", "not_found")
