"""OpenAI parameters through the real wire (issue 13, items 1 and 3): max_tokens / stop honoured,
out-of-range values refused with OpenAI's texts, and one truth about model names."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest
from cdp.domain.tokens import count_tokens
from cdp.sim import FakeDiscord

from tests.e2e.test_bad_inputs import AUTH, OK_MESSAGES, assert_openai_error
from tests.e2e.test_chat import marker, user
from tests.e2e.test_stream_early import coze_buttons
from tests.support.stack import coze_reply_text, prompt_messages, start_stack

EDIT_PAUSE = 3.0  # seconds between the Coze bot's edits where a test needs it still writing


@pytest.fixture(scope="module")
def stack(fake):
    """One stack, memory mode, STRICT_MODELS=1: the limits are applied at the edge, the same code in
    both topologies (tests/e2e/test_chat.py runs the reply paths in both)."""
    s = start_stack("memory", fake, STRICT_MODELS="1")
    yield s
    s.stop()


async def channel_deleted(fake: FakeDiscord, m: str, within: float = 15) -> None:
    (prompt,) = prompt_messages(fake, m)
    deadline = time.monotonic() + within  # CHANNEL_AUTO_DEL_TIME=1 in these tests
    while time.monotonic() < deadline:
        if any(c["id"] == prompt["channel_id"] for c in fake.deleted_channels()):
            return
        await asyncio.sleep(0.1)
    pytest.fail("the temporary channel was not deleted")


async def stream_all(client: openai.AsyncOpenAI, text: str, model: str = "gpt-4o", **kw) -> tuple[str, list]:
    stream = await client.chat.completions.create(model=model, messages=user(text), stream=True,
                                                  stream_options={"include_usage": True}, **kw)
    chunks = [c async for c in stream]
    return "".join((c.choices[0].delta.content or "") for c in chunks if c.choices), chunks


def finish_reasons(chunks: list) -> list[str]:
    return [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]


# -- max_tokens / max_completion_tokens ------------------------------------------------------------

async def test_max_tokens_cuts_the_answer_with_length(stack):
    m = marker()
    async with stack.client() as client:
        done = await client.chat.completions.create(model="gpt-4o", messages=user(f"limit {m}"), max_tokens=5)
    full = coze_reply_text(stack.fake, m)
    choice = done.choices[0]
    assert choice.finish_reason == "length"
    assert full.startswith(choice.message.content) and choice.message.content != full
    assert 0 < done.usage.completion_tokens <= 5
    assert done.usage.completion_tokens == count_tokens(choice.message.content)


async def test_streamed_max_completion_tokens_sends_nothing_past_the_limit_and_releases_the_channel(stack):
    m = marker()
    async with stack.client() as client:
        content, chunks = await stream_all(client, f"limit stream {m} [[sim:edits=20]]", max_completion_tokens=5)
    assert finish_reasons(chunks) == ["length"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 5
    assert count_tokens(content) <= 5 and content
    assert coze_reply_text(stack.fake, m).startswith(content)
    await channel_deleted(stack.fake, m)


async def test_a_limit_the_answer_stays_under_changes_nothing(stack):
    m = marker()
    async with stack.client() as client:
        done = await client.chat.completions.create(model="gpt-4o", messages=user(f"roomy {m}"),
                                                    max_tokens=4000, stop=["never in the answer"])
    assert done.choices[0].finish_reason == "stop"
    assert done.choices[0].message.content == coze_reply_text(stack.fake, m)


# -- stop -------------------------------------------------------------------------------------------

WORDS = "alpha beta gamma delta epsilon zeta eta theta"


@pytest.mark.parametrize("streamed", [True, False], ids=["stream", "whole"])
async def test_stop_split_across_two_edits_cuts_before_it(stack, streamed):
    # The simulated bot writes 3 words, then one word per edit: "gamma" and " delta" arrive in two edits.
    text = f'{marker()} [[sim:text="{WORDS}" edits=5]]'
    async with stack.client() as client:
        if streamed:
            content, chunks = await stream_all(client, text, stop=["gamma delta", "nothing"])
            assert finish_reasons(chunks) == ["stop"]
            assert chunks[-1].usage.completion_tokens == count_tokens(content)
        else:
            done = await client.chat.completions.create(model="gpt-4o", messages=user(text), stop="gamma delta")
            content = done.choices[0].message.content
            assert done.choices[0].finish_reason == "stop"
    assert content == "alpha beta "


# -- values out of OpenAI's ranges -----------------------------------------------------------------

@pytest.mark.parametrize("extra,param,code,message", [
    ({"temperature": 5}, "temperature", "decimal_above_max_value",
     "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 5 instead."),
    ({"temperature": -0.5}, "temperature", "decimal_below_min_value", None),
    ({"top_p": 1.5}, "top_p", "decimal_above_max_value", None),
    ({"presence_penalty": -3}, "presence_penalty", "decimal_below_min_value", None),
    ({"frequency_penalty": 2.5}, "frequency_penalty", "decimal_above_max_value", None),
    ({"max_tokens": 0}, "max_tokens", "integer_below_min_value",
     "Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got 0 instead."),
    ({"max_completion_tokens": -1}, "max_completion_tokens", "integer_below_min_value", None),
    ({"max_tokens": 2.5}, "max_tokens", "invalid_type",
     "Invalid type for 'max_tokens': expected an integer, but got a decimal instead."),
    ({"temperature": "hot"}, "temperature", "invalid_type", None),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "array_above_max_length",
     "Invalid 'stop': array too long. Expected an array with maximum length 4, but got an array with "
     "length 5 instead."),
    ({"stop": [1]}, "stop[0]", "invalid_type", None),
    ({"logit_bias": {"1234": 101}}, "logit_bias.1234", "decimal_above_max_value", None),
    ({"top_logprobs": 21}, "top_logprobs", "integer_above_max_value", None),
    ({"logprobs": "yes"}, "logprobs", "invalid_type", None),
    ({"seed": True}, "seed", "invalid_type", None),
])
def test_out_of_range_values_get_openai_400s(stack, extra, param, code, message):
    with httpx.Client(base_url=stack.url, timeout=15) as http:
        r = http.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": OK_MESSAGES, **extra},
                      headers=AUTH)
    err = assert_openai_error(r, 400, code, param)
    assert err["type"] == "invalid_request_error"
    if message is not None:
        assert err["message"] == message


async def test_sdk_sees_a_bad_temperature_as_bad_request_and_ignored_params_are_accepted(stack):
    async with stack.client() as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(model="gpt-4o", messages=user("hot"), temperature=5)
        assert info.value.status_code == 400 and info.value.param == "temperature"
        m = marker()
        done = await client.chat.completions.create(
            model="gpt-4o", messages=user(f"ignored {m}"), temperature=0.2, top_p=0.9, seed=7,
            presence_penalty=1, frequency_penalty=-1, logit_bias={"50256": -100}, logprobs=False, user="u1",
            n=1)
    assert done.choices[0].message.content == coze_reply_text(stack.fake, m)


# -- model truth (the default, any name served, is tested in test_bad_inputs.py) -------------------

async def test_strict_models_refuses_unlisted_names_everywhere(stack):
    want = "The model `my-own-model-name` does not exist or you do not have access to it."
    async with stack.client() as client:
        listed = [m.id async for m in client.models.list()]
        assert "gpt-4o" in listed
        for name in listed:
            assert (await client.models.retrieve(name)).id == name
        with pytest.raises(openai.NotFoundError) as info:
            await client.models.retrieve("my-own-model-name")
        assert info.value.code == "model_not_found" and info.value.type == "invalid_request_error"
        assert info.value.body["message"] == want
        with pytest.raises(openai.NotFoundError) as info:
            await client.chat.completions.create(model="my-own-model-name", messages=user("x"))
        assert info.value.code == "model_not_found" and info.value.body["message"] == want
    assert not prompt_messages(stack.fake, "my-own-model-name")


# -- a limit ends the request while Coze is still writing --------------------------------------------

@pytest.mark.parametrize("streamed", [True, False], ids=["stream", "whole"])
async def test_a_reached_limit_ends_the_request_before_coze_finishes(stack, streamed):
    """The first edit already has more than 2 tokens: the answer ends there, while the bot still
    pauses EDIT_PAUSE seconds before its next edit (no buttons yet), and the channel is released."""
    m = marker()
    fake = stack.fake
    prompt = f"early end {m} [[sim:edits=1 pause={EDIT_PAUSE}]]"
    async with stack.client(timeout=10 * EDIT_PAUSE) as client:
        if streamed:
            content, chunks = await stream_all(client, prompt, max_tokens=2)
            assert finish_reasons(chunks) == ["length"]
        else:
            done = await client.chat.completions.create(model="gpt-4o", messages=user(prompt), max_tokens=2)
            content = done.choices[0].message.content
            assert done.choices[0].finish_reason == "length"
        assert not coze_buttons(fake, m)  # Coze had not finished its reply
    assert content and count_tokens(content) <= 2
    await channel_deleted(fake, m)


# -- the OpenAPI document describes the real bodies ------------------------------------------------

def test_openapi_describes_the_chat_and_image_bodies_and_bad_bodies_stay_openai_400s(stack):
    spec = httpx.get(stack.url + "/openapi.json").json()

    def body(path: str) -> dict:
        doc = spec["paths"][path]["post"]["requestBody"]
        assert doc["required"] is True
        return doc["content"]["application/json"]["schema"]

    chat, images = body("/v1/chat/completions"), body("/v1/images/generations")
    assert "$defs" not in str(spec)  # self-contained: every $ref resolves within the document
    assert set(chat["required"]) == {"model", "messages"}
    props = chat["properties"]
    assert props["messages"]["minItems"] == 1 and props["model"]["minLength"] == 1
    message = props["messages"]["items"]
    assert message["required"] == ["role"] and "tool" in message["properties"]["role"]["enum"]
    ranges = {name: next(c for c in props[name]["anyOf"] if c["type"] != "null")
              for name in ("temperature", "top_p", "presence_penalty", "max_tokens", "top_logprobs")}
    assert (ranges["temperature"]["minimum"], ranges["temperature"]["maximum"]) == (0, 2)
    assert (ranges["top_p"]["minimum"], ranges["top_p"]["maximum"]) == (0, 1)
    assert ranges["presence_penalty"]["minimum"] == -2 and ranges["max_tokens"]["type"] == "integer"
    assert ranges["max_tokens"]["minimum"] == 1 and ranges["top_logprobs"]["maximum"] == 20
    assert any(c.get("maxItems") == 4 for c in props["stop"]["anyOf"])
    assert images["required"] == ["prompt"]
    n = next(c for c in images["properties"]["n"]["anyOf"] if c["type"] == "integer")
    assert (n["minimum"], n["maximum"]) == (1, 4)  # IMAGES_MAX_N
    # Documented, yet parsed by the route: a body the schema refuses is OpenAI's 400, never FastAPI's 422.
    r = httpx.post(stack.url + "/v1/chat/completions", json={"model": "gpt-4o"}, headers=AUTH)
    assert_openai_error(r, 400, param="messages")
    r = httpx.post(stack.url + "/v1/images/generations", json={"prompt": " "}, headers=AUTH)
    assert_openai_error(r, 400, param="prompt")
