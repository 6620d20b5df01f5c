"""The listener's store writes when the store fails (issue 12): an edit is retried with backoff until
it is written or a newer version of its message supersedes it, never dropped; the writes of one
reply stay in order; 5 failures in a row make the listener unhealthy (/healthz 503) until a write
succeeds. The store is the memory store behind a wrapper that fails the writes it is told to."""

from __future__ import annotations

import asyncio
import json

import pytest
from cdp.adapters.discord.gateway import UNHEALTHY_AFTER, GatewayStatus
from cdp.adapters.discord.recorder import ReplyRecorder, backoff
from cdp.adapters.store.memory import MemoryReplyStore
from cdp.domain.model import ReplyMessage
from cdp.entry.listener import _health_server

from tests.integration.test_listener_recorder import BUTTONS, COZE, GUILD, PROMPT, REPLY, create, update


class Throttled(Exception):
    """What a DynamoDB throttle looks like to the recorder: put raised."""


class FlakyStore(MemoryReplyStore):
    """A ReplyStore whose put fails while `failing(message)` says so; counts every attempt and
    keeps the order of the writes that went through."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = lambda m: False
        self.attempts: list[tuple[str, int]] = []
        self.written: list[tuple[str, int]] = []

    async def put(self, message: ReplyMessage) -> bool:
        self.attempts.append((message.message_id, message.version))
        await asyncio.sleep(0)  # a real store answers later
        if self.failing(message):
            raise Throttled("ProvisionedThroughputExceededException")
        self.written.append((message.message_id, message.version))
        return await super().put(message)


def fail_first(n: int):
    left = [n]

    def failing(_m) -> bool:
        left[0] -= 1
        return left[0] >= 0

    return failing


@pytest.fixture
def store():
    return FlakyStore()


@pytest.fixture
def status():
    s = GatewayStatus()
    s.set("ready", "connected (READY)")
    return s


@pytest.fixture
def rec(store, status):
    return ReplyRecorder(store, {COZE}, GUILD, health=status, retry_base=0.001, retry_cap=0.005)


async def test_failed_final_edit_is_retried_not_dropped(rec, store, status):
    await rec.on_message_create(create("Hel"))
    store.failing = fail_first(3)
    await rec.on_message_update(update("Hello, world.", 2, components=BUTTONS))
    snap = await store.snapshot(PROMPT)
    assert [m.content for m in snap.messages] == ["Hello, world."]
    assert snap.messages[0].has_components
    assert rec.write_failures == 3 and rec.recorded == 2
    assert status.store_failures == 0 and status.healthy  # the success reset the count


async def test_five_failures_in_a_row_make_the_listener_unhealthy_until_a_write_succeeds(rec, store, status):
    outage = asyncio.Event()
    store.failing = lambda m: not outage.is_set()
    task = asyncio.create_task(rec.on_message_create(create("Hel")))
    while status.store_failures < UNHEALTHY_AFTER:
        assert not task.done()  # still retrying: the edit is held, not dropped
        await asyncio.sleep(0.001)
    assert not status.healthy and status.ready  # connected, but not recording
    assert status.to_dict()["store"]["healthy"] is False
    assert "ProvisionedThroughputExceededException" in status.to_dict()["store"]["last_error"]

    server = await _health_server(0, status, host="127.0.0.1")
    port = server.sockets[0].getsockname()[1]
    try:
        code, body = await get_healthz(port)
        assert code == 503 and body["gateway"]["store"]["consecutive_failures"] >= UNHEALTHY_AFTER
        outage.set()
        await asyncio.wait_for(task, 5)
        code, body = await get_healthz(port)
        assert code == 200 and body["gateway"]["store"] == {"healthy": True, "consecutive_failures": 0,
                                                            "last_error": ""}
    finally:
        server.close()
        await server.wait_closed()
    assert [m.content for m in (await store.snapshot(PROMPT)).messages] == ["Hel"]


async def test_a_newer_version_supersedes_a_pending_retry(rec, store):
    await rec.on_message_create(create("Hel"))
    v_first = (await store.snapshot(PROMPT)).messages[0].version
    # the next edit fails for as long as it is the newest; the one after it goes through
    store.failing = lambda m: m.content == "Hello"
    stuck = asyncio.create_task(rec.on_message_update(update("Hello", 2)))
    while len(store.attempts) < 4:
        await asyncio.sleep(0.001)
    assert not stuck.done()
    await rec.on_message_update(update("Hello, world.", 3))
    await asyncio.wait_for(stuck, 5)  # gave up: superseded
    assert rec.superseded == 1
    assert [m.content for m in (await store.snapshot(PROMPT)).messages] == ["Hello, world."]
    assert store.written[-1][1] > v_first and len(store.written) == 2  # the stuck version never landed


async def test_a_retry_keeps_the_reply_in_order(rec, store):
    """Message 2 of a reply is not written before message 1's last edit, even while that edit is
    being retried."""
    second = "1500000000000000003"
    await rec.on_message_create(create("Part one"))
    store.failing = fail_first(4)
    first_edit = asyncio.create_task(rec.on_message_update(update("Part one, done.", 2)))
    await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(first_edit, rec.on_message_create(
        create("Part two", id=second, timestamp="2026-01-01T00:00:03.000000+00:00"))), 5)
    assert [mid for mid, _ in store.written] == [REPLY, REPLY, second]
    snap = await store.snapshot(PROMPT)
    assert [m.content for m in snap.messages] == ["Part one, done.", "Part two"]


def test_backoff_is_jittered_and_bounded():
    waits = [backoff(a, base=0.1, cap=5.0) for a in range(1, 60) for _ in range(20)]
    assert all(0 < w <= 5.0 for w in waits)
    assert len({round(w, 6) for w in waits}) > 100  # jitter: not a fixed schedule
    assert all(0.05 <= backoff(1, 0.1, 5.0) <= 0.1 for _ in range(50))
    assert all(2.5 <= backoff(40, 0.1, 5.0) <= 5.0 for _ in range(50))


async def get_healthz(port: int) -> tuple[int, dict]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


async def test_a_partial_update_of_an_uncached_message_waits_for_the_store(store, status):
    """After a restart (nothing cached) a partial update needs the stored message: a failed read is
    retried, not a reason to drop the edit."""
    await ReplyRecorder(store, {COZE}, GUILD).on_message_create(create("Hel"))
    fresh = ReplyRecorder(store, {COZE}, GUILD, health=status, retry_base=0.001, retry_cap=0.005)
    reads = [0]
    real = store.prompt_for_reply

    async def flaky_prompt_for_reply(mid):
        reads[0] += 1
        if reads[0] <= 3:
            raise Throttled("ThrottlingException")
        return await real(mid)

    store.prompt_for_reply = flaky_prompt_for_reply
    partial = {"id": REPLY, "channel_id": "1100000000000000002", "guild_id": GUILD, "components": BUTTONS}
    await fresh.on_message_update(partial)
    snap = await store.snapshot(PROMPT)
    assert snap.messages[0].content == "Hel" and snap.messages[0].has_components
    assert reads[0] == 4 and status.store_failures == 0
