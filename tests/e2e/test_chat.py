"""OpenAI chat completions through the real wire: openai SDK → cdp → fake Discord → simulated Coze."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import openai
import pytest

from tests.support.stack import API_KEY, MODES, coze_reply_text, prompt_messages, start_stack


def marker() -> str:
    return "m" + uuid.uuid4().hex[:12]


def user(text: str) -> list[dict]:
    return [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": text}]


async def collect_stream(client: openai.AsyncOpenAI, text: str, **kw) -> tuple[str, list]:
    stream = await client.chat.completions.create(model="gpt-4o", messages=user(text), stream=True, **kw)
    chunks = [c async for c in stream]
    content = "".join((c.choices[0].delta.content or "") for c in chunks if c.choices)
    return content, chunks


async def test_non_stream_answer_equals_coze_final_text(stack):
    m = marker()
    async with stack.client() as client:
        resp = await client.chat.completions.with_raw_response.create(model="gpt-4o", messages=user(f"hello {m}"))
    completion = resp.parse()
    assert resp.headers["x-request-id"].startswith("req_")
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "gpt-4o"
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content == coze_reply_text(stack.fake, m)
    assert "🤖" in choice.message.content and "你好" in choice.message.content
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


async def test_stream_deltas_join_to_exact_final_text(stack):
    m = marker()
    async with stack.client() as client:
        content, chunks = await collect_stream(client, f"stream please {m} [[sim:edits=20]]",
                                               stream_options={"include_usage": True})
    assert content == coze_reply_text(stack.fake, m)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == "stop"
    assert finals[0].choices[0].delta.content in (None, "")
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 3  # really streamed


async def test_stream_wire_format_is_exact_sse(stack):
    m = marker()
    body = {"model": "gpt-4o", "stream": True, "messages": user(f"raw sse {m}")}
    async with httpx.AsyncClient(timeout=30) as http:
        async with http.stream("POST", stack.url + "/v1/chat/completions", json=body,
                               headers={"Authorization": f"Bearer {API_KEY}"}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["cache-control"] == "no-cache"
            assert r.headers["x-accel-buffering"] == "no"
            assert r.headers["x-request-id"]
            raw = (await r.aread()).decode()
    frames = raw.split("\n\n")
    assert frames[-1] == "" and frames[-2] == "data: [DONE]"
    datas = []
    for frame in frames[:-2]:
        if frame.startswith(":"):
            continue  # SSE comment keepalive
        assert frame.startswith("data: ") and "\n" not in frame and not frame.startswith("data:  ")
        datas.append(json.loads(frame[6:]))
    assert all("message" not in d["choices"][0] for d in datas)
    assert datas[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert datas[-1]["choices"][0]["delta"] == {} and datas[-1]["choices"][0]["finish_reason"] == "stop"
    assert "".join(d["choices"][0]["delta"].get("content", "") for d in datas) == coze_reply_text(stack.fake, m)


async def test_twenty_concurrent_conversations_each_get_their_own_answer(stack):
    markers = [marker() for _ in range(20)]
    async with stack.client(timeout=60) as client:
        async def one(i: int, m: str) -> str:
            # The simulated Coze echoes the prompt's first characters: put the marker there.
            messages = [{"role": "user", "content": f"{m} conversation {i}"}]
            if i % 2:
                stream = await client.chat.completions.create(model="gpt-4o", messages=messages, stream=True)
                return "".join([(c.choices[0].delta.content or "") async for c in stream if c.choices])
            r = await client.chat.completions.create(model="gpt-4o", messages=messages)
            return r.choices[0].message.content

        answers = await asyncio.gather(*(one(i, m) for i, m in enumerate(markers)))
    for m, answer in zip(markers, answers):
        assert answer == coze_reply_text(stack.fake, m)
        assert m in answer  # the simulated Coze echoes an excerpt of its own prompt
    assert len(set(answers)) == 20


async def test_temporary_channel_is_created_then_deleted(stack):
    m = marker()
    async with stack.client() as client:
        await client.chat.completions.create(model="gpt-4o", messages=user(f"channel {m}"))
    (prompt,) = prompt_messages(stack.fake, m)
    channel = next(c for c in stack.fake.created_channels() if c["id"] == prompt["channel_id"])
    assert channel["name"].startswith("cdp-chat-")
    deadline = time.monotonic() + 10  # CHANNEL_AUTO_DEL_TIME=1 in these tests
    while time.monotonic() < deadline:
        if any(c["id"] == channel["id"] for c in stack.fake.deleted_channels()):
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the temporary channel was not deleted")


async def test_channel_is_deleted_when_the_client_goes_away(stack):
    m = marker()
    async with stack.client() as client:
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=user(f"leaving early {m} [[sim:slow_first_token seconds=2]]"), stream=True)
        async for _ in stream:
            break  # role chunk received: the prompt is posted; now hang up
        await stream.close()
    (prompt,) = prompt_messages(stack.fake, m)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if any(c["id"] == prompt["channel_id"] for c in stack.fake.deleted_channels()):
            return
        await asyncio.sleep(0.2)
    pytest.fail("the temporary channel of an abandoned request was not deleted")


async def test_everyone_in_a_prompt_pings_nobody(stack):
    m = marker()
    async with stack.client() as client:
        r = await client.chat.completions.create(model="gpt-4o", messages=user(f"@everyone @here look {m}"))
    assert r.choices[0].message.content == coze_reply_text(stack.fake, m)
    (prompt,) = prompt_messages(stack.fake, m)
    assert "@everyone" in prompt["content"]  # text is kept verbatim…
    assert prompt["mention_everyone"] is False  # …but pings nobody
    assert [u["id"] for u in prompt["mentions"]] == [stack.fake.config.coze_bot_ids[0]]
    assert prompt["nonce"]


@pytest.mark.parametrize("directive", ["no_buttons", "rewrite", "duplicates", "out_of_order", "partial",
                                       "multi", "long", "image_embed", "image_attachment", "drop_gateway"])
@pytest.mark.parametrize("stream", [False, True])
async def test_reply_variants_yield_the_exact_final_text(stack, directive, stream):
    m = marker()
    text = f"variant {m} [[sim:{directive}]]"
    async with stack.client(timeout=60) as client:
        if stream:
            content, chunks = await collect_stream(client, text)
            finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        else:
            r = await client.chat.completions.create(model="gpt-4o", messages=user(text))
            content, finish = r.choices[0].message.content, [r.choices[0].finish_reason]
    expected = coze_reply_text(stack.fake, m)
    if directive in ("image_embed", "image_attachment"):
        # Images become markdown after the text, as in the original.
        assert content.startswith(expected) and "\n![image](http" in content
    else:
        assert content == expected
    assert finish == ["stop"]


async def test_reply_without_buttons_completes_by_idle_timeout(stack):
    m = marker()
    started = time.monotonic()
    async with stack.client() as client:
        r = await client.chat.completions.create(model="gpt-4o", messages=user(f"no buttons {m} [[sim:no_buttons]]"))
    elapsed = time.monotonic() - started
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == coze_reply_text(stack.fake, m)
    assert elapsed < 10  # REPLY_IDLE_TIMEOUT=1.5 here, far below REQUEST_OUT_TIME=20


@pytest.fixture(params=MODES)
def own_stack(request, fake):
    """A stack of its own: a Coze limit text rests the account or the bot until the daily reset
    (cdp.app.pool), which would starve the module's shared stack."""
    s = start_stack(request.param, fake)
    yield s
    s.stop()


@pytest.mark.parametrize("kind,code", [("user_limit", "coze_account_limited"), ("bot_limit", "coze_bot_limited"),
                                       ("other", "coze_error")])
async def test_coze_error_texts_become_errors_in_our_own_words(own_stack, kind, code):
    stack = own_stack
    m = marker()
    async with stack.client() as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(model="gpt-4o", messages=user(f"err {m} [[sim:error={kind}]]"))
    err = info.value
    assert err.status_code in (502, 503)
    assert err.response.headers["x-should-retry"] == "false"
    body = err.response.json()["error"]
    assert body["code"] == code
    for word in ("credit", "balance", "permission denied"):
        assert word not in body["message"].lower()
    # Streaming: the error arrives as a data frame, then [DONE].
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(stack.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"},
                            json={"model": "gpt-4o", "stream": True,
                                  "messages": user(f"err {marker()} [[sim:error={kind}]]")})
    if kind == "bot_limit":  # the bot now rests (cdp.app.pool): refused before anything is posted
        assert r.status_code == 503 and r.json()["error"]["code"] == code and int(r.headers["Retry-After"]) > 0
        return
    frames = [f for f in r.text.split("\n\n") if f.startswith("data: ")]
    assert r.status_code == 200 and len(frames) >= 2, (r.status_code, r.text)
    assert json.loads(frames[-2][6:])["error"]["code"] == code and frames[-1] == "data: [DONE]"


async def test_timeout_without_text_is_504_and_with_text_is_length(stack):
    async with stack.client() as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(model="gpt-4o", messages=user(f"silent {marker()} [[sim:silent]]"),
                                                 extra_headers={"out-time": "1.5"})
        assert info.value.status_code == 504
        assert info.value.response.json()["error"]["type"] == "timeout"
        # Text but no completion signal before the hard timeout → the text so far, finish_reason "length".
        m = marker()
        r = await client.chat.completions.create(
            model="gpt-4o", messages=user(f"slow {m} [[sim:no_buttons edits=60]]"),
            extra_headers={"out-time": "1.0"})
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content and coze_reply_text(stack.fake, m).startswith(r.choices[0].message.content[:20])


async def test_channel_id_field_uses_that_channel(stack):
    m = marker()
    before = len(stack.fake.created_channels())
    async with stack.client() as client:
        r = await client.chat.completions.create(model="gpt-4o", messages=user(f"in general {m}"),
                                                 extra_body={"channelId": stack.fake.config.channel_id})
    (prompt,) = prompt_messages(stack.fake, m)
    assert prompt["channel_id"] == stack.fake.config.channel_id
    assert r.choices[0].message.content == coze_reply_text(stack.fake, m)
    assert not [c for c in stack.fake.created_channels()[before:] if m in c["name"]]


async def test_whole_dialog_is_sent_by_default(stack):
    m = marker()
    messages = [{"role": "user", "content": f"first {m}"}, {"role": "assistant", "content": "earlier answer"},
                {"role": "user", "content": "second question"}]
    async with stack.client() as client:
        await client.chat.completions.create(model="gpt-4o", messages=messages)
    (prompt,) = prompt_messages(stack.fake, m)
    assert "earlier answer" in prompt["content"] and "second question" in prompt["content"]
