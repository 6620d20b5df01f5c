"""DiscordRest against the fake Discord over real HTTP: routes, rate limits, nonce idempotency, errors."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from cdp.adapters.discord.rest import DiscordRest, UploadFile
from cdp.domain import discord as E
from cdp.sim import FakeDiscord, SimConfig

_DEFAULT = SimConfig()
BOT_TOKEN = _DEFAULT.bot_token
USER_TOKEN = next(iter(_DEFAULT.user_tokens))
COZE = _DEFAULT.coze_bot_ids[0]


@pytest.fixture
def fd(make_fake) -> FakeDiscord:
    return make_fake()


@pytest.fixture
async def rest(fd):
    r = DiscordRest(
        api_base=fd.base_url, bot_token=BOT_TOKEN, user_agent="Mozilla/5.0 (X11) Test", max_rate_limit_wait=10
    )
    yield r
    await r.aclose()


def user_msgs(fd, channel_id, content):
    return [m for m in fd.messages(channel_id) if m["content"] == content]


async def test_bot_routes_roundtrip(rest, fd):
    gw = await rest.get_gateway_bot()
    assert gw["url"].startswith("ws://127.0.0.1")
    me = await rest.get_current_user()
    assert me["id"] == fd.config.bot_user_id and me["bot"]
    assert (await rest.get_current_user(USER_TOKEN))["id"] == fd.config.user_tokens[USER_TOKEN]
    assert (await rest.get_application())["id"] == fd.config.application_id
    assert (await rest.get_guild(fd.config.guild_id))["id"] == fd.config.guild_id
    chans = await rest.list_guild_channels(fd.config.guild_id)
    assert fd.config.channel_id in {c["id"] for c in chans}
    member = await rest.get_guild_member(fd.config.guild_id, COZE)
    assert member["user"]["id"] == COZE
    ch = await rest.create_channel(fd.config.guild_id, "cdp-chat-test", 0, parent_id=fd.config.category_id)
    assert ch["name"] == "cdp-chat-test" and ch["parent_id"] == fd.config.category_id
    assert (await rest.get_channel(ch["id"]))["id"] == ch["id"]
    th = await rest.create_thread(ch["id"], "a thread", 60)
    assert th["name"] == "a thread"
    sent = await rest.send_bot_message(ch["id"], "hello from the bot")
    msgs = await rest.get_messages(ch["id"], limit=10)
    assert sent["id"] in {m["id"] for m in msgs}
    assert (await rest.get_messages(ch["id"], after=sent["id"])) == []
    await rest.delete_channel(ch["id"])
    with pytest.raises(E.DiscordNotFound) as ei:
        await rest.get_channel(ch["id"])
    assert ei.value.code == 10003


async def test_user_message_is_seen_by_discord_as_the_user_with_safe_mentions(rest, fd):
    content = f"hi @everyone <@{COZE}>"
    msg = await rest.send_user_message(
        USER_TOKEN, fd.config.channel_id, content, nonce="42", allowed_user_ids=[COZE]
    )
    assert msg["author"]["id"] == fd.config.user_tokens[USER_TOKEN]
    assert msg["mention_everyone"] is False
    assert [u["id"] for u in msg["mentions"]] == [COZE]
    req = [r for r in fd.request_log() if r["method"] == "POST" and r["path"].endswith("/messages")][-1]
    auth = req["headers"]["authorization"]
    assert not auth.startswith("Bot ") and USER_TOKEN not in auth
    assert req["headers"]["origin"] == "https://discord.com"


async def test_upload_as_user_and_bot(rest, fd):
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 32
    msg = await rest.send_bot_message(
        fd.config.channel_id, None, files=[UploadFile("pic.png", png, "image/png")]
    )
    att = msg["attachments"][0]
    assert att["filename"] == "pic.png" and att["size"] == len(png)
    async with httpx.AsyncClient() as c:
        assert (await c.get(att["url"])).content == png
    umsg = await rest.send_user_message(
        USER_TOKEN,
        fd.config.channel_id,
        "look",
        nonce="7",
        allowed_user_ids=[],
        files=[UploadFile("a.txt", b"abc", "text/plain")],
    )
    assert umsg["attachments"][0]["filename"] == "a.txt" and umsg["content"] == "look"


async def test_injected_429_is_waited_out(rest, fd):
    fd.inject_429("/messages", count=1, retry_after=0.4)
    t0 = time.monotonic()
    msg = await rest.send_user_message(
        USER_TOKEN, fd.config.channel_id, "after 429", nonce="n429", allowed_user_ids=[]
    )
    assert time.monotonic() - t0 >= 0.4
    assert msg["content"] == "after 429"
    assert len(user_msgs(fd, fd.config.channel_id, "after 429")) == 1


async def test_injected_global_429_blocks_the_token_then_succeeds(rest, fd):
    fd.inject_429("/guilds/", count=1, retry_after=0.3, global_=True)
    t0 = time.monotonic()
    await rest.get_guild(fd.config.guild_id)
    assert time.monotonic() - t0 >= 0.3


async def test_429_longer_than_budget_raises_rate_limited(fd):
    r = DiscordRest(api_base=fd.base_url, bot_token=BOT_TOKEN, user_agent="UA", max_rate_limit_wait=0.5)
    fd.inject_429("/channels/", count=1, retry_after=30)
    try:
        with pytest.raises(E.DiscordRateLimited) as ei:
            await r.get_channel(fd.config.channel_id)
        assert ei.value.retry_after == pytest.approx(30, abs=1)
    finally:
        await r.aclose()


async def test_bucket_headers_are_followed(rest, fd):
    # the fake allows 5 messages / 5 s per channel: the 6th waits for the reset instead of a 429
    ch = fd.config.channel_id
    t0 = time.monotonic()
    for i in range(6):
        await rest.send_bot_message(ch, f"burst {i}")
    assert time.monotonic() - t0 > 1.0
    statuses = [r["status"] for r in fd.request_log() if r["method"] == "POST"]
    assert 429 not in statuses and len(statuses) == 6


class LoseFirstResponse(httpx.AsyncBaseTransport):
    """Real HTTP, but the response to the first POST is 'lost' (the server did create the message)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.lost = 0
        self.nonces: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        resp = await self.inner.handle_async_request(request)
        if request.method == "POST":
            self.nonces.append(json.loads(request.content)["nonce"])
            if self.lost == 0:
                self.lost += 1
                await resp.aread()
                await resp.aclose()
                raise httpx.ReadTimeout("response lost", request=request)
        return resp

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_nonce_retry_does_not_double_post(fd):
    transport = LoseFirstResponse()
    r = DiscordRest(
        api_base=fd.base_url,
        bot_token=BOT_TOKEN,
        user_agent="UA",
        transport=transport,
        transient_backoff=0.01,
    )
    try:
        msg = await r.send_user_message(
            USER_TOKEN, fd.config.channel_id, "only once", nonce="n-once", allowed_user_ids=[]
        )
    finally:
        await r.aclose()
    assert transport.lost == 1 and transport.nonces == ["n-once", "n-once"]
    posted = user_msgs(fd, fd.config.channel_id, "only once")
    assert len(posted) == 1 and posted[0]["id"] == msg["id"]


async def test_5xx_on_send_is_retried_with_the_same_nonce(rest, fd):
    fd.fail_next("POST", "/messages", 502, 0, "Bad Gateway", count=1)
    msg = await rest.send_user_message(
        USER_TOKEN, fd.config.channel_id, "retried", nonce="n502", allowed_user_ids=[]
    )
    assert len(user_msgs(fd, fd.config.channel_id, "retried")) == 1 and msg["content"] == "retried"


async def test_error_mapping_from_the_fake(rest, fd):
    fd.set_max_channels(len(fd.channels()))
    with pytest.raises(E.DiscordMaxChannels) as ei:
        await rest.create_channel(fd.config.guild_id, "cdp-chat-full")
    assert ei.value.code == 30013
    with pytest.raises(E.DiscordInvalidForm):
        await rest.send_user_message(
            USER_TOKEN, fd.config.channel_id, "x" * 2001, nonce="big", allowed_user_ids=[]
        )
    with pytest.raises(E.DiscordNotFound):
        await rest.send_bot_message("1999999999999999999", "nowhere")
    fd.mark_unverified(USER_TOKEN)
    with pytest.raises(E.DiscordVerificationRequired):
        await rest.send_user_message(USER_TOKEN, fd.config.channel_id, "hi", nonce="v", allowed_user_ids=[])
    fd.revoke_token(USER_TOKEN)
    with pytest.raises(E.DiscordUnauthorized) as ei2:
        await rest.get_current_user(USER_TOKEN)
    assert USER_TOKEN not in str(ei2.value)


async def test_unreachable_discord_is_unavailable():
    r = DiscordRest(
        api_base="http://127.0.0.1:9/api/v10",
        bot_token=BOT_TOKEN,
        user_agent="UA",
        timeout=2,
        transient_backoff=0.01,
    )
    try:
        with pytest.raises(E.DiscordUnavailable):
            await r.get_gateway_bot()
    finally:
        await r.aclose()
