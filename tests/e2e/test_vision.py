"""Vision and files in chat: data: images and file parts are uploaded by the CDP bot as attachments
(multipart payload_json + files[n]) and their URLs go into the prompt; bad input is a 400 before
anything is posted."""

from __future__ import annotations

import base64
import uuid

import httpx
import openai
import pytest
from cdp.sim.util import tiny_png

from tests.support.stack import API_KEY, prompt_messages

PNG = tiny_png(10, 200, 30)
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def marker() -> str:
    return "m" + uuid.uuid4().hex[:12]


def bot_uploads(fake, channel_id: str) -> list[dict]:
    return [m for m in fake.messages(channel_id) if m["author"]["id"] == fake.config.bot_user_id
            and m.get("attachments")]


async def test_data_url_image_is_uploaded_and_its_url_is_in_the_prompt(stack):
    m = marker()
    async with stack.client() as client:
        resp = await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": [
            {"type": "text", "text": f"What is in this picture? {m}"},
            {"type": "image_url", "image_url": {"url": PNG_URL, "detail": "low"}}]}])
    assert resp.choices[0].message.content
    prompt = prompt_messages(stack.fake, m)[-1]
    uploads = bot_uploads(stack.fake, prompt["channel_id"])
    assert len(uploads) == 1 and len(uploads[0]["attachments"]) == 1
    att = uploads[0]["attachments"][0]
    assert att["content_type"] == "image/png" and att["size"] == len(PNG) and att["filename"].endswith(".png")
    assert int(uploads[0]["id"]) < int(prompt["id"])  # uploaded before the prompt was posted
    assert att["url"] in prompt["content"]
    assert "base64" not in prompt["content"]


async def test_file_part_and_https_image_in_a_stream(stack):
    m = marker()
    notes = "Quarterly notes: 你好, revenue up.\n".encode()
    async with stack.client() as client:
        stream = await client.chat.completions.create(model="gpt-4o", stream=True, messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": f"Summarise {m}"},
                {"type": "image_url", "image_url": {"url": "https://example.com/chart.png"}},
                {"type": "file", "file": {"filename": "notes.txt",
                                          "file_data": "data:text/plain;base64," + base64.b64encode(notes).decode()}},
            ]}])
        text = "".join([(c.choices[0].delta.content or "") async for c in stream if c.choices])
    assert text
    prompt = prompt_messages(stack.fake, m)[-1]
    [upload] = bot_uploads(stack.fake, prompt["channel_id"])
    [att] = upload["attachments"]
    assert att["filename"] == "notes.txt" and att["size"] == len(notes)
    assert att["url"] in prompt["content"]
    assert "https://example.com/chart.png" in prompt["content"]  # https URLs are passed on as is


async def test_plain_base64_file_data_is_accepted(stack):
    m = marker()
    async with stack.client() as client:
        await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": [
            {"type": "text", "text": f"read {m}"},
            {"type": "file", "file": {"filename": "paper.pdf",
                                      "file_data": base64.b64encode(b"%PDF-1.4\n%fake\n").decode()}}]}])
    prompt = prompt_messages(stack.fake, m)[-1]
    [upload] = bot_uploads(stack.fake, prompt["channel_id"])
    assert upload["attachments"][0]["content_type"] == "application/pdf"


def _bad(kind: str) -> dict:
    if kind == "bad_base64":
        return {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@not-base64@@"}}
    if kind == "too_big":
        big = b"\x89PNG\r\n\x1a\n" + b"\x00" * (10 * 1024 * 1024)
        return {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(big).decode()}}
    if kind == "wrong_type":
        return {"type": "file", "file": {"filename": "setup.exe",
                                         "file_data": base64.b64encode(b"MZ\x90\x00\x03\x00binary").decode()}}
    if kind == "not_an_image":
        return {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(b"hello").decode()}}
    if kind == "file_id":
        return {"type": "file", "file": {"file_id": "file-123"}}
    raise ValueError(kind)


@pytest.mark.parametrize("kind,code", [("bad_base64", None), ("too_big", "file_too_large"),
                                       ("wrong_type", None), ("not_an_image", None), ("file_id", None)])
@pytest.mark.parametrize("stream", [False, True])
def test_bad_inline_media_is_400_and_nothing_is_posted(stack, kind, code, stream):
    m = marker()
    before = len(stack.fake.created_channels())
    body = {"model": "gpt-4o", "stream": stream,
            "messages": [{"role": "user", "content": [{"type": "text", "text": f"look {m}"}, _bad(kind)]}]}
    r = httpx.post(stack.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=30)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert err["param"].startswith("messages[0].content[1]")
    if code:
        assert err["code"] == code
    assert len(stack.fake.created_channels()) == before  # no channel ...
    assert prompt_messages(stack.fake, m) == []  # ... and no prompt


async def test_bad_media_via_the_sdk_is_a_bad_request_error(stack):
    async with stack.client() as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,!!!"}}]}])
    assert "base64" in info.value.message
