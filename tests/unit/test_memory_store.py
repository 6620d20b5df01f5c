"""MemoryReplyStore (the `cdp serve` default): versions, the snapshot cache and per-prompt wake-ups."""

from __future__ import annotations

import asyncio

from cdp.adapters.store.memory import MemoryReplyStore
from cdp.domain.model import ReplyMessage

A, B = "1500000000000000001", "1500000000000000101"


def msg(prompt: str, content: str, version: int, mid: str | None = None) -> ReplyMessage:
    return ReplyMessage(message_id=mid or str(int(prompt) + 1), prompt_id=prompt, channel_id="1",
                        author_id="2", content=content, version=version)


async def test_snapshot_follows_every_newer_version_and_ignores_older_ones():
    store = MemoryReplyStore()
    assert await store.put(msg(A, "Hel", 1))
    assert (await store.snapshot(A)).messages[0].content == "Hel"
    assert await store.put(msg(A, "Hello", 2))  # the cached snapshot is replaced
    assert (await store.snapshot(A)).messages[0].content == "Hello"
    assert not await store.put(msg(A, "He", 1))
    assert (await store.snapshot(A)).messages[0].content == "Hello"
    await store.put(msg(A, "second part", 3, mid=str(int(A) + 2)))
    assert [m.content for m in (await store.snapshot(A)).messages] == ["Hello", "second part"]
    assert (await store.snapshot(B)).messages == ()


async def test_a_put_wakes_every_waiter_of_its_prompt():
    store = MemoryReplyStore()
    waiters = [asyncio.create_task(store.wait_for_change(A, (), 30)) for _ in range(3)]
    await asyncio.sleep(0)
    await store.put(msg(A, "Hi", 1))
    snaps = await asyncio.wait_for(asyncio.gather(*waiters), 10)
    assert all(s.messages[0].content == "Hi" for s in snaps)


async def test_a_put_for_another_prompt_does_not_end_a_wait():
    store = MemoryReplyStore()
    waiter = asyncio.create_task(store.wait_for_change(A, (), 0.3))
    await asyncio.sleep(0)
    await store.put(msg(B, "other", 1))
    snap = await waiter  # returned by its timeout, with nothing for A
    assert snap.prompt_id == A and snap.revision == ()


async def test_wait_returns_at_once_when_the_revision_already_differs():
    store = MemoryReplyStore()
    await store.put(msg(A, "Hi", 1))
    snap = await store.wait_for_change(A, (), 30)
    assert snap.messages[0].content == "Hi"
    assert (await store.wait_for_change(A, snap.revision, 0)).revision == snap.revision


async def test_cancelled_and_finished_waits_leave_nothing_registered():
    store = MemoryReplyStore()
    gone = asyncio.create_task(store.wait_for_change(A, (), 30))
    stays = asyncio.create_task(store.wait_for_change(A, (), 30))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    await store.put(msg(A, "Hi", 1))
    assert (await stays).messages[0].content == "Hi"
    await store.wait_for_change(B, (), 0.01)
    assert store._waiters == {}  # no future is kept per finished request (1000s of streams)


async def test_an_evicted_prompt_wakes_its_waiters():
    store = MemoryReplyStore(max_prompts=1)
    await store.put(msg(A, "Hi", 1))
    snap = await store.snapshot(A)
    waiter = asyncio.create_task(store.wait_for_change(A, snap.revision, 30))
    await asyncio.sleep(0)
    await store.put(msg(B, "newer prompt", 1))  # A is forgotten (bounded store)
    assert (await asyncio.wait_for(waiter, 10)).messages == ()
