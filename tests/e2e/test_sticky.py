"""Sticky conversations (CONVERSATION_MODE=sticky) over the wire: the openai SDK against `cdp serve` and
the fake Discord, with the in-memory store and with DynamoDB (moto, API and listener in two processes).

What Discord saw is read back from the fake: which channel each prompt went to and what it said."""

from __future__ import annotations

import asyncio
import traceback
import uuid

import httpx
import openai
import pytest

from tests.support.stack import API_KEY, MODES, prompt_messages, start_stack
from tests.support.wait import until

pytestmark = pytest.mark.e2e

IDLE_TTL = 5.0  # seconds: short, so the idle release is seen within the test
MODEL = "gpt-4o"
PROMPT_MAX_CHARS = 3000  # a refused turn is easy to make


@pytest.fixture(scope="module", params=MODES)
def sticky(request, fake):
    s = start_stack(request.param, fake, CONVERSATION_MODE="sticky", CONVERSATION_IDLE_TTL=str(IDLE_TTL),
                    CLEANUP_INTERVAL="0.5", PROMPT_MAX_CHARS=str(PROMPT_MAX_CHARS))
    yield s
    s.stop()


def marker(label: str = "st") -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"


async def chat(stack, messages: list[dict], *, stream: bool = False, **kw) -> str:
    async with stack.client() as client:
        if not stream:
            r = await client.chat.completions.create(model=MODEL, messages=messages, **kw)
            return r.choices[0].message.content
        out = []
        async for chunk in await client.chat.completions.create(model=MODEL, messages=messages, stream=True, **kw):
            if chunk.choices and chunk.choices[0].delta.content:
                out.append(chunk.choices[0].delta.content)
        return "".join(out)


def posted(fake, m: str) -> dict:
    """The one prompt message whose text holds marker `m`."""
    (msg,) = prompt_messages(fake, m)
    return msg


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


async def scenario_turn_two_posts_only_the_new_user_message_into_the_same_channel(sticky, fake):
    m1, m2, m3 = marker(), marker(), marker()
    history = [{"role": "system", "content": "Be brief."}, user(f"{m1} first question")]
    a1 = await chat(sticky, history)
    first = posted(fake, m1)
    assert "Be brief." in first["content"]  # a new conversation: the whole history is posted

    history += [assistant(a1), user(f"{m2} second question")]
    a2 = await chat(sticky, history, stream=True)  # a streamed answer is remembered the same way
    second = posted(fake, m2)
    assert second["channel_id"] == first["channel_id"]
    assert m1 not in second["content"] and "Be brief." not in second["content"]  # only the new turn
    assert a2

    history += [assistant(a2), user(f"{m3} third question")]
    await chat(sticky, history)
    third = posted(fake, m3)
    assert third["channel_id"] == first["channel_id"]
    assert m1 not in third["content"] and m2 not in third["content"]
    assert first["channel_id"] not in {c["id"] for c in fake.deleted_channels()}  # kept between turns


async def scenario_an_edited_or_regenerated_history_goes_to_a_fresh_channel_with_the_full_history(sticky, fake):
    m1, m2, m3 = marker(), marker(), marker()
    a1 = await chat(sticky, [user(f"{m1} question")])
    first = posted(fake, m1)

    await chat(sticky, [user(f"{m1} question"), assistant(a1 + " (edited by the user)"), user(f"{m2} next")])
    edited = posted(fake, m2)
    assert edited["channel_id"] != first["channel_id"]
    assert m1 in edited["content"]  # the whole (edited) history is posted

    # regenerate the first answer: the same history as the first request
    await chat(sticky, [user(f"{m3} other question")])
    await chat(sticky, [user(f"{m1} question")])
    assert {m["channel_id"] for m in prompt_messages(fake, m1)} - {first["channel_id"], edited["channel_id"]}


async def scenario_an_idle_conversation_releases_its_channel_and_starts_again(sticky, fake):
    m1, m2 = marker(), marker()
    a1 = await chat(sticky, [user(f"{m1} question")])
    channel = posted(fake, m1)["channel_id"]
    await until(lambda: channel in {c["id"] for c in fake.deleted_channels()}, timeout=IDLE_TTL + 20,
                what="the idle sticky channel's deletion")
    await asyncio.sleep(0.1)
    await chat(sticky, [user(f"{m1} question"), assistant(a1), user(f"{m2} next")])
    again = posted(fake, m2)
    assert again["channel_id"] != channel and m1 in again["content"]  # a fresh channel, full history


async def scenario_the_conversation_id_header_names_a_conversation(sticky, fake):
    name, other = marker("conv"), marker("conv")
    m1, m2, m3 = marker(), marker(), marker()
    await chat(sticky, [user(f"{m1} hello")], extra_headers={"x-conversation-id": name})
    # the client sends only its new message: the named conversation goes on in its channel
    await chat(sticky, [user(f"{m2} and then?")], extra_headers={"x-conversation-id": name})
    await chat(sticky, [user(f"{m3} hello")], extra_headers={"x-conversation-id": other})
    c1, c2, c3 = (posted(fake, m)["channel_id"] for m in (m1, m2, m3))
    assert c1 == c2 and c3 != c1
    assert m1 not in posted(fake, m2)["content"]


async def scenario_the_user_field_names_a_conversation_and_an_edited_history_starts_it_again(sticky, fake):
    name = marker("user")
    m1, m2, m3 = marker(), marker(), marker()
    a1 = await chat(sticky, [user(f"{m1} hello")], user=name)
    c1 = posted(fake, m1)["channel_id"]
    await chat(sticky, [user(f"{m1} hello"), assistant(a1), user(f"{m2} more")], user=name)
    assert posted(fake, m2)["channel_id"] == c1
    assert m1 not in posted(fake, m2)["content"]
    await chat(sticky, [user(f"{m1} hello"), assistant("something else"), user(f"{m3} more")], user=name)
    edited = posted(fake, m3)
    assert edited["channel_id"] != c1 and m1 in edited["content"]
    assert c1 in {c["id"] for c in fake.deleted_channels()}  # the edited conversation's channel is released


async def scenario_two_requests_at_once_on_one_conversation_the_second_is_refused(sticky, fake):
    name = marker("busy")
    m1, m2 = marker(), marker()
    first = asyncio.create_task(chat(sticky, [user(f"{m1} [[sim:slow_first_token seconds=6]]")],
                                     extra_headers={"x-conversation-id": name}))
    await until(lambda: prompt_messages(fake, m1), timeout=30, what="the first prompt")
    with pytest.raises(openai.APIStatusError) as exc:
        await chat(sticky, [user(f"{m2} meanwhile")], extra_headers={"x-conversation-id": name})
    assert exc.value.status_code == 503
    assert exc.value.code == "conversation_busy"
    assert int(exc.value.response.headers["retry-after"]) >= 1
    assert not prompt_messages(fake, m2)  # nothing posted into the busy conversation
    assert await first


async def scenario_a_bad_conversation_name_is_a_clear_400(sticky, fake):
    for body_user, header, param in [(123, None, "user"), ("x" * 300, None, "user"),
                                     (None, "y" * 300, "x-conversation-id")]:
        body = {"model": MODEL, "messages": [user("hi")]}
        if body_user is not None:
            body["user"] = body_user
        headers = {"Authorization": f"Bearer {API_KEY}", **({"x-conversation-id": header} if header else {})}
        async with httpx.AsyncClient(timeout=30) as client:
            r = await client.post(sticky.url + "/v1/chat/completions", json=body, headers=headers)
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["type"] == "invalid_request_error" and err["param"] == param


async def scenario_a_conversation_whose_channel_was_deleted_starts_again_in_a_new_one(sticky, fake):
    m1, m2 = marker(), marker()
    a1 = await chat(sticky, [user(f"{m1} question")])
    channel = posted(fake, m1)["channel_id"]
    r = httpx.delete(f"{fake.base_url}/channels/{channel}",
                     headers={"Authorization": f"Bot {fake.config.bot_token}"}, timeout=10)
    assert r.status_code == 200, r.text  # deleted behind the proxy's back (by hand, another tool)
    assert await chat(sticky, [user(f"{m1} question"), assistant(a1), user(f"{m2} next")])
    again = posted(fake, m2)
    assert again["channel_id"] != channel and m1 in again["content"]


async def scenario_a_refused_turn_leaves_the_conversation_as_it_was(sticky, fake):
    m1, m2 = marker(), marker()
    history = [user(f"{m1} question")]
    history.append(assistant(await chat(sticky, history)))
    with pytest.raises(openai.BadRequestError):  # refused before anything is posted
        await chat(sticky, [*history, user("x" * (PROMPT_MAX_CHARS + 1))])
    await chat(sticky, [*history, user(f"{m2} next")])  # not busy: the lease was lifted
    assert posted(fake, m2)["channel_id"] == prompt_messages(fake, m1)[0]["channel_id"]


SCENARIOS = [v for k, v in dict(globals()).items() if k.startswith("scenario_")]


async def test_sticky_conversations(sticky, fake):
    """Every scenario above, at once against one stack per store mode (independent conversations: the
    idle-TTL wait overlaps the others, and each mode's stack starts once)."""
    results = await asyncio.gather(*(scenario(sticky, fake) for scenario in SCENARIOS), return_exceptions=True)
    failed = {s.__name__: r for s, r in zip(SCENARIOS, results, strict=True) if isinstance(r, BaseException)}
    for name, exc in failed.items():
        traceback.print_exception(exc)
        print(f"FAILED: {name}: {exc!r}")
    assert not failed, f"scenarios failed: {sorted(failed)}"
