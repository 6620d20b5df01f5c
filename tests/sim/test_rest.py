from __future__ import annotations

import httpx

from .conftest import bot_client, user_client


async def test_auth_errors(fake):
    async with httpx.AsyncClient(base_url=fake.base_url) as c:
        r = await c.get("/users/@me", headers={"Authorization": "Bot wrong"})
        assert r.status_code == 401 and r.json() == {"message": "401: Unauthorized", "code": 0}
        utok = list(fake.config.user_tokens)[0]
        r = await c.get("/users/@me", headers={"Authorization": f"Bot {utok}"})  # user token with prefix
        assert r.status_code == 401
        r = await c.get("/users/@me", headers={"Authorization": utok})
        assert r.status_code == 200 and "bot" not in r.json()
        fake.mark_unverified(utok)
        r = await c.post(f"/channels/{fake.config.channel_id}/messages", json={"content": "x"}, headers={"Authorization": utok})
        assert r.status_code == 403 and r.json()["code"] == 40002
        assert r.json()["message"] == "You need to verify your account in order to perform this action."
        fake.revoke_token(fake.config.bot_token)
        r = await c.get("/gateway/bot", headers={"Authorization": f"Bot {fake.config.bot_token}"})
        assert r.status_code == 401
    log = fake.request_log()
    assert all(fake.config.bot_token not in str(e) and utok not in str(e) for e in log)


async def test_gateway_bot_and_v9(fake):
    async with bot_client(fake) as c:
        r = await c.get("/gateway/bot")
        assert r.json()["url"] == f"ws://127.0.0.1:{fake.port}/gateway" and r.json()["shards"] == 1
        r = await c.get(f"{fake.url}/api/v9/guilds/{fake.config.guild_id}/channels")
        assert r.status_code == 200 and any(ch["name"] == "general" for ch in r.json())


async def test_rate_limit_headers_and_429(make_fake):
    fd = make_fake(rate_limits={"POST /channels/{channel_id}/messages": (2, 5.0)})
    async with bot_client(fd) as c:
        path = f"/channels/{fd.config.channel_id}/messages"
        r1 = await c.post(path, json={"content": "a"})
        assert r1.headers["X-RateLimit-Limit"] == "2" and r1.headers["X-RateLimit-Remaining"] == "1"
        assert float(r1.headers["X-RateLimit-Reset-After"]) > 0 and r1.headers["X-RateLimit-Bucket"]
        await c.post(path, json={"content": "b"})
        r3 = await c.post(path, json={"content": "c"})
        assert r3.status_code == 429
        body = r3.json()
        assert body["message"] == "You are being rate limited." and body["global"] is False and 0 < body["retry_after"] <= 5
        assert r3.headers["X-RateLimit-Scope"] == "user" and int(r3.headers["Retry-After"]) >= 1
        assert r3.headers["X-RateLimit-Bucket"] == r1.headers["X-RateLimit-Bucket"]
        # a different channel (major parameter) has its own counter
        ch = (await c.post(f"/guilds/{fd.config.guild_id}/channels", json={"name": "other"})).json()
        assert (await c.post(f"/channels/{ch['id']}/messages", json={"content": "d"})).status_code == 200
        fd.inject_429("/gateway/bot", 1, 2.5, global_=True)
        r = await c.get("/gateway/bot")
        assert r.status_code == 429 and r.json()["global"] is True and r.headers["X-RateLimit-Global"] == "true"
        assert r.json()["retry_after"] == 2.5
        assert (await c.get("/gateway/bot")).status_code == 200


async def test_channel_lifecycle_and_limit(fake):
    fake.set_max_channels(3)  # general + category + 1
    async with bot_client(fake) as c:
        r = await c.post(f"/guilds/{fake.config.guild_id}/channels", json={"name": "cdp-chat-1", "type": 0})
        assert r.status_code == 201
        cid = r.json()["id"]
        r = await c.post(f"/guilds/{fake.config.guild_id}/channels", json={"name": "cdp-chat-2", "type": 0})
        assert r.status_code == 400 and r.json()["code"] == 30013
        r = await c.post(f"/channels/{cid}/threads", json={"name": "t", "auto_archive_duration": 61})
        assert r.status_code == 400 and r.json()["code"] == 50035
        r = await c.post(f"/channels/{cid}/threads", json={"name": "t", "auto_archive_duration": 60, "type": 11})
        assert r.status_code == 201 and r.json()["parent_id"] == cid
        r = await c.delete(f"/channels/{cid}")
        assert r.status_code == 200 and r.json()["id"] == cid
        r = await c.delete(f"/channels/{cid}")
        assert r.status_code == 404 and r.json() == {"message": "Unknown Channel", "code": 10003}
        r = await c.get(f"/guilds/{fake.config.guild_id}/members/1")
        assert r.status_code == 404 and r.json()["code"] == 10007
    assert [c["id"] for c in fake.deleted_channels()] == [cid]
    fake.fail_next("POST", "/channels", 500, 0, "500: Internal Server Error", 1)
    async with bot_client(fake) as c:
        r = await c.post(f"/guilds/{fake.config.guild_id}/channels", json={"name": "x"})
        assert r.status_code == 500


async def test_message_validation_and_nonce(fake):
    async with user_client(fake) as c:
        path = f"/channels/{fake.config.channel_id}/messages"
        r = await c.post(path, json={"content": "x" * 2001})
        assert r.status_code == 400 and r.json()["code"] == 50035 and "content" in r.json()["errors"]
        r = await c.post(path, json={"content": ""})
        assert r.status_code == 400 and r.json() == {"message": "Cannot send an empty message", "code": 50006}
        r1 = await c.post(path, json={"content": "once", "nonce": "abc123", "enforce_nonce": True})
        r2 = await c.post(path, json={"content": "once", "nonce": "abc123", "enforce_nonce": True})
        assert r1.status_code == r2.status_code == 200 and r1.json()["id"] == r2.json()["id"]
        assert r1.json()["nonce"] == "abc123"
        ids = [m["id"] for m in fake.messages(fake.config.channel_id)]
        assert ids.count(r1.json()["id"]) == 1 and len(ids) == 1
        r = await c.get(path, params={"limit": 1})
        assert [m["id"] for m in r.json()] == [r1.json()["id"]]
        # snowflakes increase
        r3 = await c.post(path, json={"content": "two"})
        assert int(r3.json()["id"]) > int(r1.json()["id"])


async def test_allowed_mentions(fake):
    coze = fake.config.coze_bot_ids[0]
    other = list(fake.config.user_tokens.values())[1]
    content = f"@everyone hi <@{coze}> and <@!{other}> [[sim:silent]]"
    async with user_client(fake) as c:
        path = f"/channels/{fake.config.channel_id}/messages"
        m = (await c.post(path, json={"content": content})).json()
        assert m["mention_everyone"] is True and {u["id"] for u in m["mentions"]} == {coze, other}
        m = (await c.post(path, json={"content": content, "allowed_mentions": {"parse": [], "users": [coze]}})).json()
        assert m["mention_everyone"] is False and [u["id"] for u in m["mentions"]] == [coze]
        m = (await c.post(path, json={"content": content, "allowed_mentions": {"parse": []}})).json()
        assert m["mention_everyone"] is False and m["mentions"] == []
        r = await c.post(path, json={"content": content, "allowed_mentions": {"parse": ["users"], "users": [coze]}})
        assert r.status_code == 400 and r.json()["code"] == 50035


async def test_multipart_upload(fake):
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
    async with bot_client(fake) as c:
        r = await c.post(
            f"/channels/{fake.config.channel_id}/messages",
            data={"payload_json": '{"content": "file 🤖", "attachments": [{"id": 0, "filename": "a.png"}]}'},
            files={"files[0]": ("a.png", png, "image/png")},
        )
        assert r.status_code == 200, r.text
        att = r.json()["attachments"][0]
        assert att["filename"] == "a.png" and att["size"] == len(png) and att["content_type"] == "image/png"
        assert att["url"] == att["proxy_url"] and att["url"].startswith(f"{fake.url}/attachments/{fake.config.channel_id}/{att['id']}/a.png")
        got = await c.get(att["url"])
        assert got.status_code == 200 and got.content == png
