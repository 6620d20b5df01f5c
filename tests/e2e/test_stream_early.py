"""Streamed text reaches the client while Coze is still editing its reply (issue 9).

The simulated Coze bot writes its first words, pauses EDIT_PAUSE seconds, then writes the rest.
When the client holds its first content delta, the test looks at the fake Discord: the Coze
message must still be the first edit. No clock is compared, so a loaded machine only has to
deliver one edit within EDIT_PAUSE (the stack's lag is well under a second).
"""

from __future__ import annotations

import pytest
from cdp.sim import FakeDiscord

from tests.e2e.test_chat import marker, user
from tests.support.fake import fast_sim_config
from tests.support.stack import MODES, coze_reply_text, start_stack

EDIT_PAUSE = 4.0  # seconds between the Coze bot's edits


@pytest.fixture(scope="module")
def fake():
    with FakeDiscord(fast_sim_config(coze_edit_interval=EDIT_PAUSE)) as fd:
        yield fd


@pytest.fixture(scope="module", params=MODES)
def slow_stack(request, fake):
    """A stack that waits for Coze's slow edits instead of ending the reply as idle."""
    s = start_stack(request.param, fake, REPLY_IDLE_TIMEOUT=str(4 * EDIT_PAUSE),
                    REQUEST_OUT_TIME=str(10 * EDIT_PAUSE), STREAM_REQUEST_OUT_TIME=str(10 * EDIT_PAUSE))
    yield s
    s.stop()


def coze_buttons(fake: FakeDiscord, marker: str) -> list:
    """The suggestion buttons Coze adds once its reply is complete ([] while it is still editing)."""
    for c in [*fake.created_channels(), {"id": fake.config.channel_id}]:
        msgs = fake.messages(c["id"])
        prompts = {m["id"] for m in msgs if marker in (m.get("content") or "") and not m["author"].get("bot")}
        for m in msgs:
            if (m.get("message_reference") or {}).get("message_id") in prompts:
                return m.get("components") or []
    raise AssertionError(f"no Coze reply to {marker!r} in the fake Discord")


async def test_first_content_delta_arrives_while_coze_is_still_editing(slow_stack):
    m = marker()
    fake = slow_stack.fake
    first: tuple[str, str, list] | None = None  # (delta, Coze's text then, Coze's buttons then)
    content = ""
    async with slow_stack.client(timeout=10 * EDIT_PAUSE) as client:
        # edits=1: the message is created with its first 3 words, then one edit writes the rest.
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=user(f"early {m} [[sim:edits=1]]"), stream=True)
        async for chunk in stream:
            delta = chunk.choices[0].delta.content if chunk.choices else None
            if delta and first is None:
                first = (delta, coze_reply_text(fake, m), coze_buttons(fake, m))
            content += delta or ""
    final = coze_reply_text(fake, m)
    assert content == final and coze_buttons(fake, m)
    assert first is not None
    delta, coze_text_then, buttons_then = first
    assert not buttons_then and len(coze_text_then) < len(final)  # Coze was still at its first edit
    assert final.startswith(coze_text_then) and coze_text_then.startswith(delta)
