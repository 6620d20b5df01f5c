"""The listener (hikari) against the fake Discord over real HTTP + websocket.

Every FakeDiscord binds port 0; each test has its own, so the file is xdist-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

import httpx
import pytest
from cdp.adapters.discord.gateway import DiscordListener, GatewayStatus
from cdp.adapters.discord.recorder import ReplyRecorder
from cdp.adapters.discord.rest import DiscordRest
from cdp.adapters.store.memory import MemoryReplyStore
from cdp.domain.discord import DiscordUnauthorized
from cdp.domain.reply import to_reply_message
from cdp.entry import bootstrap
from cdp.entry.listener import run_listener
from cdp.settings import Settings
from cdp.sim import FakeDiscord, SimConfig, final_text

from tests.support.proc import free_port, settings_env

# the fake's tokens have Discord's shape (hikari parses the bot id out of the first segment)
_DEFAULT = SimConfig()
BOT_TOKEN = _DEFAULT.bot_token
USER_TOKEN = next(iter(_DEFAULT.user_tokens))


def sim_config(**kw) -> SimConfig:
    base = dict(
        heartbeat_interval_ms=1000,
        coze_edit_interval=0.05,
        coze_first_token_delay=0.05,
    )
    base.update(kw)
    return SimConfig(**base)


@pytest.fixture
def fd():
    f = FakeDiscord(sim_config()).start()
    try:
        yield f
    finally:
        f.stop()


class Harness:
    def __init__(self, fd: FakeDiscord, token: str = BOT_TOKEN) -> None:
        self.fd = fd
        self.store = MemoryReplyStore()
        self.coze = fd.config.coze_bot_ids[0]
        self.recorder = ReplyRecorder(self.store, set(fd.config.coze_bot_ids), fd.config.guild_id)
        self.listener = DiscordListener(api_base=fd.base_url, bot_token=token, recorder=self.recorder)
        self.rest = DiscordRest(
            api_base=fd.base_url, bot_token=BOT_TOKEN, user_agent="Mozilla/5.0 (X11) Test"
        )

    async def close(self) -> None:
        await self.listener.stop()
        await self.rest.aclose()

    async def ask(self, text: str) -> tuple[str, str]:
        content = f"{text} <@{self.coze}>"
        msg = await self.rest.send_user_message(
            USER_TOKEN,
            self.fd.config.channel_id,
            content,
            nonce=str(time.time_ns()),
            allowed_user_ids=[self.coze],
        )
        return msg["id"], content

    async def final(self, prompt_id: str, expected: str, timeout: float = 15.0, need_buttons: bool = True):
        deadline = time.monotonic() + timeout
        snap = await self.store.snapshot(prompt_id)
        while time.monotonic() < deadline:
            text = "".join(m.content for m in snap.messages)
            done = snap.messages and (snap.messages[-1].has_components or not need_buttons)
            if done and text == expected:
                return snap
            snap = await self.store.wait_for_change(prompt_id, snap.revision, deadline - time.monotonic())
        return snap

    def sim_reply_messages(self, prompt_id: str):
        """What the fake Discord holds for this prompt, as ReplyMessages (the ground truth)."""
        out = []
        for raw in self.fd.messages(self.fd.config.channel_id):
            rm = to_reply_message(raw, {self.coze})
            if rm is not None and rm.prompt_id == prompt_id:
                out.append(rm)
        return sorted(out, key=lambda m: int(m.message_id))


@pytest.fixture
async def h(fd):
    harness = Harness(fd)
    yield harness
    await harness.close()


def same_reply(a, b) -> bool:
    return (a.message_id, a.content, a.image_urls, a.suggestions, a.has_components, a.version) == (
        b.message_id,
        b.content,
        b.image_urls,
        b.suggestions,
        b.has_components,
        b.version,
    )


async def test_ready_and_records_default_reply_exactly(h, fd):
    await h.listener.start()
    assert await h.listener.wait_ready(10)
    st = h.listener.status.to_dict()
    assert st["state"] == "ready" and st["ready_count"] == 1 and st["ready"] is True
    stats = fd.gateway_stats()
    assert stats["identify_count"] == 1 and stats["sessions"][0]["intents"] == 33281
    # hikari speaks zlib-stream transport compression to the fake
    assert all(c.z is not None for c in fd.sim.gateway.current_conns())

    prompt_id, content = await h.ask("What is the capital of France?")
    snap = await h.final(prompt_id, final_text(content, fd.url))
    assert "".join(m.content for m in snap.messages) == final_text(content, fd.url)
    truth = h.sim_reply_messages(prompt_id)
    assert len(snap.messages) == len(truth) == 1
    assert same_reply(snap.messages[0], truth[0])
    assert snap.messages[0].suggestions and snap.messages[0].author_id == h.coze


@pytest.mark.parametrize(
    "directive",
    [
        "duplicates",
        "out_of_order",
        "partial",
        "rewrite",
        "image_embed",
        "image_attachment",
        "long",
        "partial image_embed",
    ],
)
async def test_variants_end_with_the_right_final_message(h, fd, directive):
    await h.listener.start()
    assert await h.listener.wait_ready(10)
    prompt_id, content = await h.ask(f"Tell me something [[sim:{directive}]]")
    expected = final_text(content, fd.url)
    snap = await h.final(prompt_id, expected)
    truth = h.sim_reply_messages(prompt_id)
    assert "".join(m.content for m in snap.messages) == expected
    assert [m.message_id for m in snap.messages] == [m.message_id for m in truth]
    for got, want in zip(snap.messages, truth):
        assert (got.content, got.image_urls, got.suggestions, got.has_components) == (
            want.content,
            want.image_urls,
            want.suggestions,
            want.has_components,
        )
    if "image" in directive:
        assert snap.messages[-1].image_urls


async def test_resume_after_drop_mid_reply(h, fd):
    await h.listener.start()
    assert await h.listener.wait_ready(10)
    prompt_id, content = await h.ask("Explain resuming [[sim:edits=8]]")
    # wait for the reply to start, then cut the connection while Coze is still editing
    deadline = time.monotonic() + 5
    while not (await h.store.snapshot(prompt_id)).messages and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert fd.gateway_drop() == 1
    snap = await h.final(prompt_id, final_text(content, fd.url))
    assert "".join(m.content for m in snap.messages) == final_text(content, fd.url)
    assert snap.messages[-1].has_components
    stats = fd.gateway_stats()
    assert stats["resume_count"] >= 1 and stats["identify_count"] == 1
    assert stats["resume_path_connections"] >= 1  # RESUME went to resume_gateway_url
    assert h.listener.status.resumes >= 1 and h.listener.status.ready


async def test_sim_drop_directive_replays_missed_edits(h, fd):
    await h.listener.start()
    assert await h.listener.wait_ready(10)
    prompt_id, content = await h.ask("Drop me [[sim:drop_gateway]]")
    snap = await h.final(prompt_id, final_text(content, fd.url))
    assert "".join(m.content for m in snap.messages) == final_text(content, fd.url)
    assert fd.resume_count() >= 1 and fd.identify_count() == 1


async def test_op7_reconnect_resumes(h, fd):
    await h.listener.start()
    assert await h.listener.wait_ready(10)
    assert fd.gateway_reconnect() == 1
    deadline = time.monotonic() + 10
    while fd.resume_count() < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert fd.resume_count() == 1 and fd.identify_count() == 1
    assert await h.listener.wait_ready(5)
    prompt_id, content = await h.ask("after op 7")
    snap = await h.final(prompt_id, final_text(content, fd.url))
    assert "".join(m.content for m in snap.messages) == final_text(content, fd.url)


@pytest.mark.parametrize("resumable", [False, True])
async def test_op9_invalid_session(h, fd, resumable):
    await h.listener.start()
    assert await h.listener.wait_ready(10)
    assert fd.gateway_invalid_session(resumable) == 1
    deadline = time.monotonic() + 10
    if resumable:
        while fd.resume_count() < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert fd.resume_count() == 1 and fd.identify_count() == 1
    else:
        while h.listener.status.ready_count < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert fd.identify_count() == 2 and h.listener.status.ready_count == 2
    assert await h.listener.wait_ready(5)
    prompt_id, content = await h.ask("after op 9")
    snap = await h.final(prompt_id, final_text(content, fd.url))
    assert "".join(m.content for m in snap.messages) == final_text(content, fd.url)


FIXES = {
    4004: "BOT_TOKEN is invalid or was reset",
    4010: "single shard",
    4011: "dedicated bot",
    4012: "v10",
    4013: "33281",
    4014: "Enable the Message Content intent for the CDP bot (BOT_TOKEN) in the Discord Developer Portal → Bot "
    "→ Privileged Gateway Intents",
}


async def _wait_failed(h, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while h.listener.status.state != "failed" and time.monotonic() < deadline:
        await h.listener.status.wait_change(deadline - time.monotonic())


async def _assert_failed_for_good(h, fd, caplog, code, wait_more: float):
    await _wait_failed(h)
    assert not await h.listener.wait_ready(1)
    st = h.listener.status
    assert st.state == "failed" and not st.ready
    assert st.close_code == code
    assert FIXES[code] in st.fix
    await asyncio.sleep(wait_more)  # hikari would reconnect within ~2 s if it were going to
    assert fd.gateway_connections() <= 2
    assert fd.identify_count() <= 2
    errors = [r for r in caplog.records if r.name == "cdp.adapters.discord.gateway" and r.levelno >= logging.ERROR]
    assert len(errors) == 1 and FIXES[code] in errors[0].getMessage()
    assert not [r for r in caplog.records if "during shut down" in r.getMessage()]


async def test_close_4014_when_message_content_intent_is_off(h, fd, caplog):
    fd.set_app_flags(0)  # the real path: the portal switch is off
    await h.listener.start()
    await _assert_failed_for_good(h, fd, caplog, 4014, 2.5)
    assert fd.gateway_connections() == 1


@pytest.mark.parametrize("code", [4004, 4010, 4011, 4012, 4013, 4014])
async def test_fatal_identify_close_codes_stop(h, fd, caplog, code):
    fd.set_identify_close_code(code)
    await h.listener.start()
    await _assert_failed_for_good(h, fd, caplog, code, 0.5 if code != 4004 else 2.5)
    assert fd.gateway_connections() == 1


async def test_revoked_bot_token_fails_on_gateway_bot_401(h, fd, caplog):
    fd.revoke_token(BOT_TOKEN)
    await h.listener.start()
    assert not await h.listener.wait_ready(10)
    st = h.listener.status
    assert st.state == "failed" and "BOT_TOKEN is invalid or was reset" in st.fix and "401" in st.detail
    await asyncio.sleep(2.0)
    assert fd.gateway_connections() == 0
    gw_calls = [r for r in fd.request_log() if r.get("path", "").endswith("/gateway/bot")]
    assert len(gw_calls) == 1  # no retry loop on 401


async def test_token_revoked_while_connected_fails_on_resume(h, fd, caplog):
    await h.listener.start()
    assert await h.listener.wait_ready(10)
    fd.revoke_token(BOT_TOKEN)
    fd.gateway_drop()
    await _assert_failed_for_good(h, fd, caplog, 4004, 2.5)
    assert fd.gateway_connections() == 2


async def test_malformed_token_fails_without_connecting(fd):
    h = Harness(fd, token="not-a-discord-token")
    try:
        await h.listener.start()
        assert not await h.listener.wait_ready(5)
        assert h.listener.status.state == "failed" and "BOT_TOKEN is malformed" in h.listener.status.fix
        assert fd.gateway_connections() == 0
    finally:
        await h.close()


async def test_stop_then_status_stopped(h, fd):
    await h.listener.start()
    assert await h.listener.wait_ready(10)
    await h.listener.stop()
    assert h.listener.status.state == "stopped"
    deadline = time.monotonic() + 5
    while fd.open_gateway_connections() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert fd.open_gateway_connections() == 0


async def test_no_token_in_logs(fd, caplog):
    caplog.set_level(1)  # everything, hikari's TRACE included
    h = Harness(fd)
    try:
        await h.listener.start()
        assert await h.listener.wait_ready(10)
        prompt_id, content = await h.ask("secret check")
        await h.final(prompt_id, final_text(content, fd.url))
        fd.gateway_drop()
        await asyncio.sleep(0.1)
        assert await h.listener.wait_ready(10)
        fd.revoke_token(USER_TOKEN)
        with pytest.raises(DiscordUnauthorized):
            await h.rest.send_user_message(
                USER_TOKEN, fd.config.channel_id, "x", nonce="1", allowed_user_ids=[]
            )
    finally:
        await h.close()
    text = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "hikari" in text and "cdp.adapters.discord.gateway" in text  # we did capture the libraries' logs
    assert BOT_TOKEN not in text and USER_TOKEN not in text
    assert BOT_TOKEN.split(".")[-1] not in text


def test_gateway_status_to_dict():
    st = GatewayStatus()
    assert st.to_dict()["state"] == "starting" and not st.ready
    st.set("failed", "x", close_code=4014, fix="do y")
    d = st.to_dict()
    assert d["state"] == "failed" and d["close_code"] == 4014 and d["fix"] == "do y"
    with pytest.raises(ValueError):
        st.set("bogus")


async def test_zombie_connection_is_closed_and_resumed(h, fd):
    await h.listener.start()
    assert await h.listener.wait_ready(10)
    fd.gateway_stop_acks(True)
    deadline = time.monotonic() + 10
    while fd.gateway_connections() < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    fd.gateway_stop_acks(False)
    assert fd.gateway_connections() >= 2
    while fd.resume_count() < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert fd.resume_count() >= 1 and fd.identify_count() == 1
    assert await h.listener.wait_ready(10)
    prompt_id, content = await h.ask("after a zombie")
    snap = await h.final(prompt_id, final_text(content, fd.url))
    assert "".join(m.content for m in snap.messages) == final_text(content, fd.url)


async def test_op1_heartbeat_request_is_answered():
    # a long interval: after the first beat, any beat within the next second answers the op 1
    with FakeDiscord(sim_config(heartbeat_interval_ms=30000)) as fd:
        h = Harness(fd)
        try:
            await h.listener.start()
            assert await h.listener.wait_ready(10)
            await asyncio.sleep(0.3)

            def beats() -> int:
                return sum(1 for e in list(fd.sim.gateway.events) if e["op"] == 1)

            before = beats()
            assert fd.gateway_request_heartbeat() == 1
            deadline = time.monotonic() + 1.0
            while beats() == before and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert beats() == before + 1
        finally:
            await h.close()


async def test_new_session_recovers_replies_of_bot_config_bots(monkeypatch, tmp_path):
    """After a reconnect that is not a RESUME, `cdp listener` reads back what it missed: also the
    replies of bot_config.json bots, in their own channel (channelId) and in CHANNEL_ID."""
    default, own, shared = "1300000000000000001", "1300000000000000002", "1300000000000000003"
    with FakeDiscord(sim_config(coze_bot_ids=[default, own, shared])) as fd:
        own_channel = fd.add_old_channel("own-bot")["id"]
        bot_config = tmp_path / "bot_config.json"
        bot_config.write_text(json.dumps([
            {"proxySecret": "sk-test-key-1", "cozeBotId": own, "model": ["m"], "channelId": own_channel},
            {"proxySecret": "sk-test-key-1", "cozeBotId": shared, "model": ["m"]},
        ]))
        settings = Settings(_env_file=None, **settings_env(fd, BOT_CONFIG_PATH=str(bot_config)))
        stores = bootstrap.make_stores(settings)
        monkeypatch.setattr(bootstrap, "make_stores", lambda _settings: stores)
        port, stop = free_port(), asyncio.Event()
        task = asyncio.create_task(run_listener(settings, port, stop=stop, install_signals=False))
        try:
            async with httpx.AsyncClient() as http:
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                            break
                    await asyncio.sleep(0.05)
            assert fd.identify_count() == 1

            fd.set_identify_close_code(4000)  # the next IDENTIFY is refused: the listener stays away longer
            assert fd.gateway_invalid_session(False) == 1  # session gone: a new one follows, no RESUME
            prompts = [fd.post_as_user(own_channel, f"<@{own}> while away"),
                       fd.post_as_user(fd.config.channel_id, f"<@{shared}> while away too")]

            def answered(prompt: dict) -> bool:
                return any((m.get("message_reference") or {}).get("message_id") == prompt["id"]
                           and m.get("components") for m in fd.messages(prompt["channel_id"]))

            deadline = time.monotonic() + 10
            while not all(answered(p) for p in prompts) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert all(answered(p) for p in prompts)
            # nobody was connected while the bots answered: only recovery can record these replies
            assert not any(s["valid"] for s in fd.gateway_stats()["sessions"])

            for prompt in prompts:
                deadline = time.monotonic() + 20
                snap = await stores.replies.snapshot(prompt["id"])
                while not (snap.messages and snap.messages[-1].has_components) and time.monotonic() < deadline:
                    snap = await stores.replies.wait_for_change(prompt["id"], snap.revision,
                                                                deadline - time.monotonic())
                assert snap.messages and snap.messages[-1].has_components
                assert snap.messages[0].content == final_text(prompt["content"], fd.url)
            assert fd.identify_count() == 3  # the refused IDENTIFY, then the new session
        finally:
            stop.set()
            assert await asyncio.wait_for(task, 30) == 0
