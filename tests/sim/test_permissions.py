"""The fake Discord's channels and permissions as Discord has them: a second server and a DM the bot
cannot act in through GUILD_ID, permission overwrites stored, returned and enforced (reads, posts,
gateway delivery), Manage Roles required to set them."""

from __future__ import annotations

import httpx

from .conftest import bot_client, ready_gateway, user_client

VIEW, SEND, HISTORY = 1 << 10, 1 << 11, 1 << 16
ALLOW = str(VIEW | SEND | HISTORY)


def bystander(fd) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=fd.base_url, headers={"Authorization": fd.config.bystander_token})


async def test_get_channel_other_server_dm_unknown(fake):
    cfg = fake.config
    async with bot_client(fake) as bot, user_client(fake, 0) as alice, bystander(fake) as eve:
        r = await bot.get(f"/channels/{cfg.other_channel_id}")  # the bot is a member there too
        assert r.status_code == 200 and r.json()["guild_id"] == cfg.other_guild_id and r.json()["type"] == 0
        r = await bot.get(f"/channels/{cfg.dm_channel_id}")  # someone else's DM
        assert r.status_code == 403 and r.json()["code"] == 50001
        r = await alice.get(f"/channels/{cfg.dm_channel_id}")
        assert r.status_code == 200 and r.json()["type"] == 1 and "guild_id" not in r.json()
        assert (await eve.get(f"/channels/{cfg.other_channel_id}")).status_code == 403
        r = await bot.get("/channels/1100000000000000999")
        assert r.status_code == 404 and r.json()["code"] == 10003
        # the accounts can post in the other server and their DM (what the proxy must prevent)
        assert (await alice.post(f"/channels/{cfg.dm_channel_id}/messages", json={"content": "x"})).status_code == 200
        assert (await alice.post(f"/channels/{cfg.other_channel_id}/messages", json={"content": "x"})).status_code == 200
        # the guild's listing knows neither
        ids = {c["id"] for c in (await bot.get(f"/guilds/{cfg.guild_id}/channels")).json()}
        assert cfg.channel_id in ids and not ids & {cfg.other_channel_id, cfg.dm_channel_id}
        # a parent of another server is refused
        r = await bot.post(f"/guilds/{cfg.guild_id}/channels", json={"name": "x", "parent_id": cfg.other_channel_id})
        assert r.status_code == 400


async def test_overwrites_are_stored_returned_and_enforced(fake):
    cfg = fake.config
    alice_id = list(cfg.user_tokens.values())[0]
    ows = [{"id": cfg.guild_id, "type": 0, "allow": "0", "deny": str(VIEW)},
           {"id": cfg.bot_user_id, "type": 1, "allow": ALLOW, "deny": "0"},
           {"id": alice_id, "type": 1, "allow": ALLOW, "deny": "0"}]
    async with bot_client(fake) as bot, user_client(fake, 0) as alice, user_client(fake, 1) as bob, \
            bystander(fake) as eve:
        r = await bot.post(f"/guilds/{cfg.guild_id}/channels", json={"name": "private", "permission_overwrites": ows})
        assert r.status_code == 201 and r.json()["permission_overwrites"] == ows
        cid = r.json()["id"]
        assert (await bot.get(f"/channels/{cid}")).json()["permission_overwrites"] == ows
        assert (await alice.post(f"/channels/{cid}/messages", json={"content": "secret"})).status_code == 200
        assert len((await bot.get(f"/channels/{cid}/messages")).json()) == 1
        for c in (bob, eve):
            r = await c.get(f"/channels/{cid}/messages")
            assert r.status_code == 403 and r.json()["code"] == 50001
            assert (await c.post(f"/channels/{cid}/messages", json={"content": "x"})).status_code == 403
        # let bob in
        bob_id = list(cfg.user_tokens.values())[1]
        r = await bot.put(f"/channels/{cid}/permissions/{bob_id}", json={"allow": ALLOW, "deny": "0", "type": 1})
        assert r.status_code == 204
        assert (await bob.get(f"/channels/{cid}/messages")).status_code == 200
        assert (await eve.get(f"/channels/{cid}/messages")).status_code == 403


async def test_overwrites_need_manage_roles(fake):
    cfg = fake.config
    role = fake.bot_role_id()
    fake.set_role_permissions(role, (1 << 4) | VIEW | SEND | HISTORY)  # Manage Channels, no Manage Roles
    ows = [{"id": cfg.guild_id, "type": 0, "allow": "0", "deny": str(VIEW)}]
    async with bot_client(fake) as bot:
        r = await bot.post(f"/guilds/{cfg.guild_id}/channels", json={"name": "p", "permission_overwrites": ows})
        assert r.status_code == 403 and r.json()["code"] == 50013
        assert (await bot.post(f"/guilds/{cfg.guild_id}/channels", json={"name": "public"})).status_code == 201
        fake.set_role_permissions(role, (1 << 4) | (1 << 28))  # may not grant what it lacks (Manage Server)
        bad = [{"id": cfg.guild_id, "type": 0, "allow": str(1 << 5), "deny": "0"}]
        r = await bot.post(f"/guilds/{cfg.guild_id}/channels", json={"name": "p", "permission_overwrites": bad})
        assert r.status_code == 403 and r.json()["code"] == 50013
        r = await bot.post(f"/guilds/{cfg.guild_id}/channels", json={"name": "p", "permission_overwrites": [{"id": "x"}]})
        assert r.status_code == 400 and r.json()["code"] == 50035


async def test_gateway_delivers_only_what_the_bot_may_see(fake):
    cfg = fake.config
    alice_id = list(cfg.user_tokens.values())[0]
    hidden = [{"id": cfg.guild_id, "type": 0, "allow": "0", "deny": str(VIEW)},
              {"id": alice_id, "type": 1, "allow": ALLOW, "deny": "0"}]
    gw, _ = await ready_gateway(fake)
    try:
        async with bot_client(fake) as bot, user_client(fake, 0) as alice:
            cid = (await bot.post(f"/guilds/{cfg.guild_id}/channels",
                                  json={"name": "hidden", "permission_overwrites": hidden})).json()["id"]
            await alice.post(f"/channels/{cid}/messages", json={"content": "not for the bot"})
            await alice.post(f"/channels/{cfg.other_channel_id}/messages", json={"content": "elsewhere"})
            await alice.post(f"/channels/{cfg.channel_id}/messages", json={"content": "visible"})
        frames = await gw.recv_until(lambda p: p.get("t") == "MESSAGE_CREATE" and p["d"]["channel_id"] == cfg.channel_id)
        created = [p["d"] for p in frames if p.get("t") == "MESSAGE_CREATE"]
        assert [d["channel_id"] for d in created] == [cfg.other_channel_id, cfg.channel_id]
        assert created[0]["guild_id"] == cfg.other_guild_id and "member" not in created[0]
    finally:
        await gw.close()
