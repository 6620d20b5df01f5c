"""`cdp serve`'s periodic sweep of stray `cdp-chat-*` channels (CHANNEL_SWEEP_AGE), which spares
channels of live requests, catches the channel of a process killed mid-request after a restart, and
the 503 when the guild is full without MAX_CHANNEL_DEL_TYPE."""

from __future__ import annotations

import asyncio
import time
import uuid

import openai
import pytest

from tests.support.stack import coze_reply_text, start_stack

pytestmark = pytest.mark.e2e

SWEEP = {"CHANNEL_SWEEP_AGE": "1.5", "CHANNEL_SWEEP_INTERVAL": "0.5"}


@pytest.fixture(scope="module")
def stack(fake):
    s = start_stack("memory", fake, **SWEEP)
    yield s
    s.stop()


def ids(fake) -> set[str]:
    return {c["id"] for c in fake.channels()}


def wait_for(cond, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_stray_channels_are_swept_once_old_enough(stack):
    fake = stack.fake
    stray = fake.add_old_channel("cdp-chat-stray", age=3600)["id"]
    notes = fake.add_old_channel("notes", age=3600)["id"]
    fresh = fake.add_old_channel("cdp-chat-fresh", age=0)["id"]
    wait_for(lambda: stray not in ids(fake), what="the stray channel to be swept")
    assert fresh in ids(fake)  # younger than CHANNEL_SWEEP_AGE
    wait_for(lambda: fresh not in ids(fake), what="the fresh channel to age and be swept")
    assert notes in ids(fake) and fake.config.channel_id in ids(fake)


async def test_channel_of_a_live_request_is_spared(stack):
    fake = stack.fake
    m = uuid.uuid4().hex
    async with stack.client() as client:
        # Coze answers after 3 s: the request's channel is older than CHANNEL_SWEEP_AGE meanwhile
        resp = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": f"[[sim:slow_first_token seconds=3]] {m}"}])
    assert resp.choices[0].message.content == coze_reply_text(fake, m)


async def test_full_guild_without_max_channel_del_type_is_503(stack):
    fake = stack.fake
    temp = fake.add_old_channel("cdp-chat-not-touched", age=0)["id"]
    fake.set_max_channels(sum(1 for c in fake.channels() if c["type"] not in (10, 11, 12)))
    try:
        async with stack.client() as client:
            with pytest.raises(openai.APIStatusError) as info:
                await client.chat.completions.create(model="gpt-4o",
                                                     messages=[{"role": "user", "content": "hi"}])
    finally:
        fake.set_max_channels(500)
    assert info.value.status_code == 503 and info.value.body["code"] == "channel_limit"
    assert "set MAX_CHANNEL_DEL_TYPE" in info.value.body["message"]
    assert temp in {c["id"] for c in fake.channels()}  # nothing deleted without the setting


async def test_channel_of_a_process_killed_mid_request_is_deleted(fake, stack):
    """A crash loses the in-memory registry; the channel is still found and deleted by the sweep of
    the process that runs next (here `stack`, as after a restart)."""
    first = start_stack("memory", fake, CHANNEL_SWEEP_AGE="0")
    try:
        before = {c["id"] for c in fake.created_channels()}

        async def ask():
            async with first.client(timeout=30) as client:
                await client.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": "[[sim:slow_first_token seconds=20]] x"}])

        task = asyncio.create_task(ask())
        deadline = time.monotonic() + 10
        while not (new := {c["id"] for c in fake.created_channels()} - before):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        first.api.proc.kill()  # a crash: no cleanup, the in-memory registry is gone
        first.api.proc.wait(5)
        with pytest.raises(openai.APIConnectionError):
            await task
        (orphan,) = new
        assert orphan in ids(fake)
    finally:
        first.stop()
    deadline = time.monotonic() + 10
    while orphan in ids(fake):
        assert time.monotonic() < deadline, "the orphaned channel was never deleted"
        await asyncio.sleep(0.1)
