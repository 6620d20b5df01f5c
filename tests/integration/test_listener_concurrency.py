"""The listener records replies concurrently: a slow store write of one reply (DynamoDB takes a few
ms a write, more under load) does not hold back the edits of every other reply behind it."""

from __future__ import annotations

import asyncio
import time

from cdp.adapters.discord.gateway import DiscordListener
from cdp.adapters.discord.recorder import ReplyRecorder
from cdp.adapters.discord.rest import DiscordRest
from cdp.adapters.store.memory import MemoryReplyStore
from cdp.domain.model import ReplyMessage
from cdp.sim import SimConfig, final_text

USER_TOKEN = next(iter(SimConfig().user_tokens))


class StallingStore(MemoryReplyStore):
    """Every write of the first prompt's reply waits until a write of another prompt's reply came in."""

    def __init__(self) -> None:
        super().__init__()
        self.stalled_prompt: str | None = None
        self.other_written = asyncio.Event()
        self.stalled_for_good = False

    async def put(self, message: ReplyMessage) -> bool:
        if message.prompt_id == self.stalled_prompt:
            try:
                await asyncio.wait_for(self.other_written.wait(), 5)
            except TimeoutError:  # writes recorded one at a time: the other reply waits behind this one
                self.stalled_for_good = True
        else:
            self.other_written.set()
        return await super().put(message)


async def test_a_stalled_write_does_not_hold_back_another_reply(make_fake):
    fd = make_fake()
    store = StallingStore()
    coze = fd.config.coze_bot_ids[0]
    listener = DiscordListener(api_base=fd.base_url, bot_token=fd.config.bot_token,
                               recorder=ReplyRecorder(store, {coze}, fd.config.guild_id))
    rest = DiscordRest(api_base=fd.base_url, bot_token=fd.config.bot_token, user_agent="Mozilla/5.0 (X11) Test")
    try:
        await listener.start()
        assert await listener.wait_ready(10)

        async def ask(text: str) -> tuple[str, str]:
            content = f"{text} [[sim:slow_first_token=0]] <@{coze}>"
            m = await rest.send_user_message(USER_TOKEN, fd.config.channel_id, content,
                                             nonce=str(time.time_ns()), allowed_user_ids=[coze])
            return m["id"], content

        first, first_text = await ask("first question")
        store.stalled_prompt = first
        second, second_text = await ask("second question")
        for prompt, text in ((second, second_text), (first, first_text)):
            snap = await store.snapshot(prompt)
            deadline = time.monotonic() + 15
            while not (snap.messages and snap.messages[-1].has_components) and time.monotonic() < deadline:
                snap = await store.wait_for_change(prompt, snap.revision, deadline - time.monotonic())
            assert "".join(m.content for m in snap.messages) == final_text(text, fd.url)
        assert not store.stalled_for_good
    finally:
        await listener.stop()
        await rest.aclose()
