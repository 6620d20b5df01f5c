"""ReplyRecorder: raw gateway dispatch data -> ReplyStore (memory store, no network)."""

from __future__ import annotations

import pytest
from cdp.adapters.discord.recorder import ReplyRecorder
from cdp.adapters.store.memory import MemoryReplyStore

COZE = "1300000000000000001"
GUILD = "1100000000000000001"
CH = "1100000000000000002"
PROMPT = "1500000000000000001"
REPLY = "1500000000000000002"


def ts(sec: int) -> str:
    return f"2026-01-01T00:00:{sec:02d}.000000+00:00"


def create(content="Hel", **kw):
    d = {
        "id": REPLY,
        "channel_id": CH,
        "guild_id": GUILD,
        "author": {"id": COZE, "bot": True},
        "content": content,
        "timestamp": ts(0),
        "edited_timestamp": None,
        "embeds": [],
        "attachments": [],
        "components": [],
        "message_reference": {"message_id": PROMPT, "channel_id": CH, "guild_id": GUILD},
    }
    d.update(kw)
    return d


def update(content, sec, **kw):
    return create(content, edited_timestamp=ts(sec), **kw)


BUTTONS = [{"type": 1, "components": [{"type": 2, "style": 2, "label": "More?", "custom_id": "x"}]}]


@pytest.fixture
def store():
    return MemoryReplyStore()


@pytest.fixture
def rec(store):
    return ReplyRecorder(store, {COZE}, GUILD)


async def final(store):
    snap = await store.snapshot(PROMPT)
    assert len(snap.messages) == 1
    return snap.messages[0]


async def test_create_and_edits(rec, store):
    await rec.on_message_create(create("Hel"))
    await rec.on_message_update(update("Hello wor", 1))
    await rec.on_message_update(update("Hello world", 2, components=BUTTONS))
    m = await final(store)
    assert m.content == "Hello world" and m.has_components and m.suggestions == ("More?",)


async def test_out_of_order_and_duplicates(rec, store):
    await rec.on_message_create(create("Hel"))
    await rec.on_message_update(update("Hello world", 2))
    await rec.on_message_update(update("Hello wor", 1))  # late
    await rec.on_message_update(update("Hello world", 2))  # duplicate
    await rec.on_message_create(create("Hel"))  # duplicate create, late
    assert (await final(store)).content == "Hello world"


async def test_partial_update_merges_onto_last_full_state(rec, store):
    await rec.on_message_create(create("Hel"))
    await rec.on_message_update(update("Hello", 1))
    before = await store.snapshot(PROMPT)
    await rec.on_message_update(
        {
            "id": REPLY,
            "channel_id": CH,
            "guild_id": GUILD,
            "embeds": [{"image": {"url": "https://cdn/x.png"}}],
        }
    )
    m = await final(store)
    assert m.content == "Hello" and m.image_urls == ("https://cdn/x.png",)
    assert (await store.snapshot(PROMPT)).revision != before.revision  # waiters wake up
    await rec.on_message_update({"id": REPLY, "channel_id": CH, "components": BUTTONS})
    m = await final(store)
    assert m.content == "Hello" and m.has_components and m.image_urls == ("https://cdn/x.png",)
    # a duplicate partial changes nothing
    v = m.version
    await rec.on_message_update({"id": REPLY, "channel_id": CH, "components": BUTTONS})
    assert (await final(store)).version == v


async def test_partial_for_evicted_message_uses_store(store):
    rec = ReplyRecorder(store, {COZE}, GUILD, max_cached=1)
    await rec.on_message_create(create("Hello there"))
    await rec.on_message_create(
        create("other", id="1500000000000000009", message_reference={"message_id": "1500000000000000008"})
    )
    # REPLY fell out of the LRU; a partial update of it must still land, content untouched
    await rec.on_message_update({"id": REPLY, "channel_id": CH, "components": BUTTONS})
    m = await final(store)
    assert m.content == "Hello there" and m.has_components and m.suggestions == ("More?",)


async def test_fresh_recorder_partial_uses_store(store):
    # e.g. a second listener (deploy) or a restart mid-reply
    await ReplyRecorder(store, {COZE}, GUILD).on_message_update(update("Hello there", 3))
    await ReplyRecorder(store, {COZE}, GUILD).on_message_update(
        {"id": REPLY, "channel_id": CH, "embeds": [{"image": {"url": "https://cdn/y.png"}}]}
    )
    m = await final(store)
    assert m.content == "Hello there" and m.image_urls == ("https://cdn/y.png",)


async def test_ignores_other_authors_guilds_and_unknown_partials(rec, store):
    await rec.on_message_create(create("hi", author={"id": "999", "bot": False}))
    await rec.on_message_create(create("hi", guild_id="42"))
    await rec.on_message_update({"id": "777", "channel_id": CH, "embeds": []})
    await rec.on_message_create(create("no ref", message_reference=None))
    assert (await store.snapshot(PROMPT)).messages == ()
    assert rec.recorded == 0


async def test_referenced_message_without_reference(rec, store):
    await rec.on_message_create(create("Yo", message_reference=None, referenced_message={"id": PROMPT}))
    assert (await final(store)).content == "Yo"
