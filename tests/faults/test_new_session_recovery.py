"""`cdp serve` (memory topology) after a gateway session that cannot be resumed (op 9 false): the
edits Discord sent while there was no session are never replayed. Before, only `cdp listener`
recovered them through REST; `cdp serve` waited for edits that never came and, after
REPLY_IDLE_TIMEOUT, returned the truncated text as a complete answer (finish_reason "stop")."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.support.stack import coze_reply_text, start_stack

pytestmark = pytest.mark.e2e


async def test_edits_missed_between_two_sessions_are_recovered(make_fake):
    fake = make_fake(coze_edit_interval=0.15, coze_edits=8)
    stack = start_stack("memory", fake)
    try:
        m = uuid.uuid4().hex
        async with stack.client() as client:
            text = []
            invalidated = False
            async for part in await client.chat.completions.create(
                    model="gpt-4o", stream=True, messages=[{"role": "user", "content": f"tell me {m}"}]):
                if part.choices and part.choices[0].delta.content:
                    text.append(part.choices[0].delta.content)
                    if not invalidated:  # mid-reply: the session ends, the next one is new, and late:
                        invalidated = True  # its first IDENTIFY is refused, so the rest of the reply
                        await asyncio.to_thread(fake.set_identify_close_code, 4000)  # is sent meanwhile
                        await asyncio.to_thread(fake.gateway_invalid_session, False)
        assert invalidated
        assert "".join(text) == coze_reply_text(fake, m)
        assert fake.identify_count() >= 2  # a new session, not a RESUME
        for _ in range(100):  # the log line follows the recorded reply
            if "recovered replies that arrived while the listener was down" in stack.api.log():
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("no recovery logged")
    finally:
        stack.stop()
