"""Private temporary channels (TEMP_CHANNEL_PRIVATE) and configured channels outside GUILD_ID, over
the wire: `cdp serve` against the fake Discord, which enforces permission overwrites on reads, posts
and gateway delivery (a Coze bot or a listener left out of the overwrites would never answer)."""

from __future__ import annotations

import json
import uuid

import httpx
import openai
import pytest
from cdp.domain.discord import PERM_MANAGE_ROLES
from cdp.sim.core import BOT_ROLE_PERMS

from tests.support.stack import API_KEY, prompt_messages, start_stack

pytestmark = pytest.mark.e2e

MEMBER_ALLOW = str((1 << 10) | (1 << 11) | (1 << 16))  # VIEW_CHANNEL | SEND_MESSAGES | READ_MESSAGE_HISTORY


def marker() -> str:
    return f"priv-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def keep(fake):
    """Conversation channels are kept (CHANNEL_AUTO_DEL_TIME=0), so a bystander can try to read them."""
    s = start_stack("memory", fake, CHANNEL_AUTO_DEL_TIME="0")
    yield s
    s.stop()


async def ask(stack, text: str, **kw) -> str:
    async with stack.client(**kw) as client:
        r = await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": text}])
    return r.choices[0].message.content


def as_user(fake, token: str) -> httpx.Client:
    return httpx.Client(base_url=fake.base_url, headers={"Authorization": token}, timeout=10)


def overwrites(fake, channel_id: str) -> set[tuple]:
    ch = next(c for c in fake.channels() if c["id"] == channel_id)
    return {(o["id"], o["type"], o["allow"], o["deny"]) for o in ch["permission_overwrites"]}


async def test_temporary_channel_is_private_to_bot_account_and_coze(fake, keep):
    cfg = fake.config
    m = marker()
    answer = await ask(keep, f"{m} hello")
    assert answer  # the Coze bot could post and the listener could read: both are in the overwrites
    (prompt,) = prompt_messages(fake, m)
    cid, author = prompt["channel_id"], prompt["author"]["id"]
    assert cid != cfg.channel_id
    assert overwrites(fake, cid) == {
        (cfg.guild_id, 0, "0", str(1 << 10)),  # @everyone may not see it
        (cfg.bot_user_id, 1, MEMBER_ALLOW, "0"),
        (author, 1, MEMBER_ALLOW, "0"),
        (cfg.coze_bot_ids[0], 1, MEMBER_ALLOW, "0"),
    }
    # another member of the server (and the other user account) can neither read nor post
    other_account = next(t for t, uid in cfg.user_tokens.items() if uid != author)
    for token in (cfg.bystander_token, other_account):
        with as_user(fake, token) as c:
            r = c.get(f"/channels/{cid}/messages")
            assert r.status_code == 403 and r.json()["code"] == 50001
            assert c.post(f"/channels/{cid}/messages", json={"content": "peek"}).status_code == 403
            assert c.get(f"/channels/{cid}").status_code == 403
    # the posting account can read its conversation
    own = next(t for t, uid in cfg.user_tokens.items() if uid == author)
    with as_user(fake, own) as c:
        assert any(m in x["content"] for x in c.get(f"/channels/{cid}/messages").json())


async def test_bot_without_manage_roles_gets_a_clear_error(fake, keep):
    role = fake.bot_role_id()
    fake.set_role_permissions(role, int(BOT_ROLE_PERMS) & ~PERM_MANAGE_ROLES)
    try:
        before = len(fake.created_channels())
        with pytest.raises(openai.APIStatusError) as info:
            await ask(keep, f"{marker()} hello")
        assert info.value.status_code == 502 and info.value.code == "bot_missing_permissions"
        assert "Manage Roles" in info.value.message and "TEMP_CHANNEL_PRIVATE=0" in info.value.message
        assert len(fake.created_channels()) == before
    finally:
        fake.set_role_permissions(role, int(BOT_ROLE_PERMS))


async def test_temp_channel_private_0_restores_public_channels(fake):
    s = start_stack("memory", fake, CHANNEL_AUTO_DEL_TIME="0", TEMP_CHANNEL_PRIVATE="0")
    try:
        m = marker()
        assert await ask(s, f"{m} hello")
        (prompt,) = prompt_messages(fake, m)
        assert overwrites(fake, prompt["channel_id"]) == set()
        with as_user(fake, fake.config.bystander_token) as c:  # every member can read it, as before
            r = c.get(f"/channels/{prompt['channel_id']}/messages")
            assert r.status_code == 200 and any(m in x["content"] for x in r.json())
    finally:
        s.stop()


async def test_failover_account_is_let_into_the_private_channel(make_fake):
    """An account that must verify is refused only when it posts: the next account is given access
    to the private channel (PUT permission overwrite) and posts instead."""
    fake = make_fake()
    alice, bob = list(fake.config.user_tokens)
    alice_id, bob_id = fake.config.user_tokens[alice], fake.config.user_tokens[bob]
    fake.mark_unverified(alice)
    s = start_stack("memory", fake, CHANNEL_AUTO_DEL_TIME="0")
    try:
        marks = [marker(), marker()]
        for m in marks:  # one of the two requests picks alice first (least recently used)
            assert await ask(s, f"{m} hello")
        channels = [prompt_messages(fake, m)[0] for m in marks]
        assert all(p["author"]["id"] == bob_id for p in channels)
        members = [{o[0] for o in overwrites(fake, p["channel_id"])} for p in channels]
        assert sum(alice_id in ids for ids in members) == 1  # created for alice, then bob let in
        assert all(bob_id in ids for ids in members)
        assert any(e["method"] == "PUT" and e["path"].endswith(f"/permissions/{bob_id}")
                   for e in fake.request_log())
    finally:
        s.stop()


@pytest.fixture
def other_server_bot_config(fake, tmp_path) -> str:
    path = tmp_path / "bot_config.json"
    path.write_text(json.dumps([{"proxySecret": API_KEY, "cozeBotId": fake.config.coze_bot_ids[0],
                                 "model": ["gpt-4o"], "channelId": fake.config.other_channel_id}]))
    return str(path)


@pytest.mark.parametrize("setting", ["bot_config", "CHANNEL_ID"])
async def test_configured_channel_outside_the_guild_is_refused(fake, other_server_bot_config, setting):
    cfg = fake.config
    env = ({"BOT_CONFIG_PATH": other_server_bot_config} if setting == "bot_config"
           else {"CHANNEL_ID": cfg.dm_channel_id})
    s = start_stack("memory", fake, DEFAULT_CHANNEL_ENABLE="1", **env)
    try:
        with pytest.raises(openai.APIStatusError) as info:
            await ask(s, f"{marker()} hello")
        assert info.value.status_code == 400
        assert info.value.code == ("channel_not_allowed" if setting == "bot_config" else "channel_not_found")
        assert ("bot_config.json" if setting == "bot_config" else "CHANNEL_ID") in info.value.message
        assert fake.messages(cfg.other_channel_id) == [] and fake.messages(cfg.dm_channel_id) == []
    finally:
        s.stop()
