"""The sticky channel budget (CONVERSATION_CHANNEL_BUDGET) against the fake Discord: the channel keeper
and the sticky use case (cdp.app.sticky) over the real REST adapter, with the in-memory stores."""

from __future__ import annotations

import time

import pytest
from cdp.adapters.discord.rest import DiscordRest
from cdp.adapters.store.memory import MemoryChannelRegistry, MemoryConversationStore
from cdp.app.channels import ChannelKeeper
from cdp.app.sticky import StickyConversations
from cdp.domain.sticky import StickyConversation
from cdp.settings import Settings

pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
async def sticky(fake):
    cfg = fake.config
    settings = Settings(GUILD_ID=cfg.guild_id, BOT_TOKEN=cfg.bot_token, DISCORD_API_BASE=fake.base_url,
                        CONVERSATION_MODE="sticky", CONVERSATION_CHANNEL_BUDGET=3, TEMP_CHANNEL_PRIVATE=False)
    rest = DiscordRest(api_base=fake.base_url, bot_token=cfg.bot_token, user_agent="Mozilla/5.0 (X11) Test")
    keeper = ChannelKeeper(settings, rest, MemoryChannelRegistry())
    yield StickyConversations(settings, MemoryConversationStore(), keeper)
    await keeper.aclose(wait=1.0)
    await rest.aclose()


async def open_conversation(sticky: StickyConversations, key: str, last_used: float, **kw) -> str:
    channel_id = await sticky.keeper.create(f"req_{key}")
    await sticky.store.put(StickyConversation(key, channel_id, "1", "", last_used, last_used + 3600, **kw))
    return channel_id


def deleted(fake) -> set[str]:
    return {c["id"] for c in fake.deleted_channels()}


async def test_the_least_recently_used_idle_conversation_is_released_first(sticky, fake):
    now = time.time()
    busy = await open_conversation(sticky, "busy", now - 300, lease_owner="req_x", lease_until=now + 60)
    old = await open_conversation(sticky, "old", now - 200)
    recent = await open_conversation(sticky, "recent", now - 100)
    await sticky.make_room()  # 3 channels, budget 3: one goes
    assert old in deleted(fake) and not {busy, recent} & deleted(fake)
    assert await sticky.store.get("old") is None and await sticky.keeper.registry.all()


async def test_under_the_budget_nothing_is_released(sticky, fake):
    now = time.time()
    a = await open_conversation(sticky, "a", now - 200)
    b = await open_conversation(sticky, "b", now - 100)
    await sticky.make_room()
    assert not {a, b} & deleted(fake)


async def test_a_busy_conversation_is_never_released_even_over_the_budget(sticky, fake):
    now = time.time()
    ids = [await open_conversation(sticky, f"k{i}", now - i, lease_owner=f"req_{i}", lease_until=now + 60)
           for i in range(3)]
    await sticky.make_room()
    assert not set(ids) & deleted(fake)
