"""SIGTERM to `cdp serve` with requests in flight (issue 12): the requests are answered (uvicorn drains
them), then the channel keeper finishes the deletions that are due (within SHUTDOWN_DUE_WITHIN) before
the process exits, and leaves the later ones registered with their delete_at, for the next start's
cleanup job. Before, every pending deletion was cancelled: in memory mode the channel leaked."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import pytest

from tests.support.stack import coze_reply_text, start_stack

pytestmark = pytest.mark.e2e

# Coze answers after 1 s; the reply is over REPLY_IDLE_TIMEOUT (1.5 s) later: well inside uvicorn's
# 5 s of graceful shutdown.
SLOW = "[[sim:slow_first_token seconds=1]]"


def created(fake) -> set[str]:
    return {c["id"] for c in fake.created_channels()}


def live(fake) -> set[str]:
    return {c["id"] for c in fake.channels()}


async def until(cond, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return value


async def sigterm_mid_request(stack, *, stream: bool) -> tuple[str, str]:
    """Start a request, SIGTERM `cdp serve` once its channel exists; returns (channel id, answer)."""
    fake = stack.fake
    before = created(fake)
    m = uuid.uuid4().hex
    async with stack.client() as client:
        async def ask() -> str:
            msgs = [{"role": "user", "content": f"{SLOW} {m}"}]
            if not stream:
                resp = await client.chat.completions.create(model="gpt-4o", messages=msgs)
                return resp.choices[0].message.content
            out = []
            async for part in await client.chat.completions.create(model="gpt-4o", messages=msgs, stream=True):
                if part.choices and part.choices[0].delta.content:
                    out.append(part.choices[0].delta.content)
            return "".join(out)

        task = asyncio.create_task(ask())
        new = await until(lambda: created(fake) - before, what="the request's channel")
        stack.api.proc.send_signal(signal.SIGTERM)
        answer = await task
    assert answer == coze_reply_text(fake, m)  # drained, not cut
    assert await asyncio.to_thread(stack.api.wait_exit, 30) == 0  # a clean exit, after the shutdown
    (channel_id,) = new
    return channel_id, answer


@pytest.mark.parametrize("stream", [False, True])
async def test_memory_due_deletions_are_done_before_exit(fake, stream):
    # 3 s after the answer: due within SHUTDOWN_DUE_WITHIN; the in-memory registry dies with the process,
    # so leaving it registered would leak the channel. No sweep: only the shutdown may delete it.
    stack = start_stack("memory", fake, CHANNEL_AUTO_DEL_TIME="3", CHANNEL_SWEEP_AGE="0")
    try:
        channel_id, _ = await sigterm_mid_request(stack, stream=stream)
        assert channel_id not in live(fake), stack.logs()[-3000:]
        assert channel_id in {c["id"] for c in fake.deleted_channels()}
    finally:
        stack.stop()


async def test_dynamodb_later_deletions_stay_registered(fake):
    from cdp.adapters.store.dynamodb.replies import CHANNEL_PK

    stack = start_stack("dynamodb", fake, CHANNEL_AUTO_DEL_TIME="600", CHANNEL_SWEEP_AGE="0")
    try:
        channel_id, _ = await sigterm_mid_request(stack, stream=True)
        ended = time.time()
        assert channel_id in live(fake)  # not due: not deleted early
        ddb = stack.moto.client()
        items = []
        for table in ddb.list_tables()["TableNames"]:
            try:
                got = ddb.get_item(TableName=table, Key={"pk": {"S": CHANNEL_PK}, "sk": {"S": channel_id}})
            except ddb.exceptions.ClientError:
                continue  # another key schema
            if "Item" in got:
                items.append(got["Item"])
        assert len(items) == 1, items
        delete_at = float(items[0]["delete_at"]["N"])  # scheduled, not left "in use"
        assert ended + 500 < delete_at < ended + 601
    finally:
        stack.stop()
