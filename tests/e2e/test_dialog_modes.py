"""The original's conversation switches: DEFAULT_CHANNEL_ENABLE=1 (no temporary channel) and
ALL_DIALOG_RECORD_ENABLE=0 (only the last user message is posted)."""

from __future__ import annotations

import uuid

import pytest

from tests.support.stack import MODES, coze_reply_text, prompt_messages, start_stack


@pytest.fixture(scope="module", params=MODES)
def default_channel_stack(request, fake):
    stack = start_stack(request.param, fake, DEFAULT_CHANNEL_ENABLE="1", ALL_DIALOG_RECORD_ENABLE="0")
    yield stack
    stack.stop()


async def test_default_channel_and_last_user_message_only(default_channel_stack):
    stack = default_channel_stack
    m = "m" + uuid.uuid4().hex[:12]
    created_before = len(stack.fake.created_channels())
    messages = [{"role": "system", "content": "SYSTEM-TEXT"},
                {"role": "user", "content": "FIRST-QUESTION"},
                {"role": "assistant", "content": "EARLIER-ANSWER"},
                {"role": "user", "content": f"{m} second question"}]
    async with stack.client() as client:
        r = await client.chat.completions.create(model="gpt-4o", messages=messages)
        streamed = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": f"{m}s streamed"}], stream=True)
        streamed_text = "".join([(c.choices[0].delta.content or "") async for c in streamed if c.choices])
    (prompt,) = prompt_messages(stack.fake, f"{m} second")
    assert prompt["channel_id"] == stack.fake.config.channel_id  # the default channel, no isolation
    assert prompt["content"].startswith(f"{m} second question")  # only the last user message…
    for earlier in ("SYSTEM-TEXT", "FIRST-QUESTION", "EARLIER-ANSWER"):
        assert earlier not in prompt["content"]  # …not the dialog as JSON
    assert r.choices[0].message.content == coze_reply_text(stack.fake, f"{m} second")
    assert streamed_text == coze_reply_text(stack.fake, f"{m}s streamed")
    assert len(stack.fake.created_channels()) == created_before  # no temporary channel
