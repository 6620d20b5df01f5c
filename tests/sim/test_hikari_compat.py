"""Our real gateway library (hikari) must accept the fake unchanged: READY, GUILD_CREATE, messages, resume."""

from __future__ import annotations

import asyncio
import logging

import hikari
from cdp.sim import final_text


async def test_hikari_gateway_bot_against_fake(fake):
    logging.getLogger("hikari").setLevel(logging.ERROR)
    cfg = fake.config
    bot = hikari.GatewayBot(cfg.bot_token, rest_url=fake.base_url, intents=hikari.Intents.GUILDS | hikari.Intents.GUILD_MESSAGES | hikari.Intents.MESSAGE_CONTENT, banner=None, suppress_optimization_warning=True)
    updates: list[hikari.MessageUpdateEvent] = []
    guilds: list[str] = []
    done = asyncio.Event()

    @bot.listen(hikari.GuildAvailableEvent)
    async def on_guild(e: hikari.GuildAvailableEvent) -> None:
        guilds.append(e.guild.name)

    @bot.listen(hikari.MessageUpdateEvent)
    async def on_update(e: hikari.MessageUpdateEvent) -> None:
        updates.append(e)
        if e.message.components:
            done.set()

    await bot.start()
    try:
        ch = await bot.rest.create_guild_text_channel(cfg.guild_id, "cdp-chat-hk")
        await asyncio.to_thread(fake.gateway_drop)
        prompt = f"hello <@{cfg.coze_bot_ids[0]}>"
        await asyncio.to_thread(fake.post_as_user, str(ch.id), prompt)
        await asyncio.wait_for(done.wait(), 10)
        assert guilds == [cfg.guild_name]
        texts = [u.message.content for u in updates if u.message.content]
        assert texts[-1] == final_text(prompt)
        assert fake.resume_count() >= 1 and fake.identify_count() == 1
        await bot.rest.delete_channel(ch.id)
    finally:
        await bot.close()
