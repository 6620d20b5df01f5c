from __future__ import annotations

import websockets

from tests.support.wait import until

from .conftest import INTENTS, RawGateway, ready_gateway


async def test_hello_identify_ready_guild_create(fake):
    gw = await RawGateway.connect(fake.gateway_url)
    hello = await gw.recv()
    assert hello == {"op": 10, "d": {"heartbeat_interval": 1000, "_trace": hello["d"]["_trace"]}, "s": None, "t": None}
    await gw.identify(fake.config.bot_token)
    ready = await gw.recv()
    assert ready["op"] == 0 and ready["t"] == "READY" and ready["s"] == 1
    d = ready["d"]
    assert d["v"] == 10 and d["user"]["id"] == fake.config.bot_user_id and d["user"]["bot"] is True
    assert d["guilds"] == [{"id": fake.config.guild_id, "unavailable": True}]
    assert d["resume_gateway_url"].startswith(f"ws://127.0.0.1:{fake.port}/")
    assert d["application"]["id"] == fake.config.application_id and d["shard"] == [0, 1]
    gc = await gw.recv()
    assert gc["t"] == "GUILD_CREATE" and gc["s"] == 2
    g = gc["d"]
    assert any(c["name"] == "general" and c["type"] == 0 for c in g["channels"])
    member_ids = {m["user"]["id"] for m in g["members"]}
    assert {fake.config.bot_user_id, *fake.config.coze_bot_ids, *fake.config.user_tokens.values()} <= member_ids
    assert fake.identify_count() == 1
    await gw.close()


async def test_heartbeat_ack_and_server_heartbeat_request(fake):
    gw, _ = await ready_gateway(fake)
    await gw.send(1, gw.seq)
    assert (await gw.recv())["op"] == 11
    fake.gateway_request_heartbeat()
    assert (await gw.recv())["op"] == 1
    await gw.close()


async def test_payload_before_identify_4003_and_bad_json_4002(fake):
    gw = await RawGateway.connect(fake.gateway_url)
    await gw.recv()
    await gw.send(3, {"status": "online"})
    assert await gw.close_code() == 4003
    gw = await RawGateway.connect(fake.gateway_url)
    await gw.recv()
    await gw.ws.send("{not json")
    assert await gw.close_code() == 4002


async def test_bad_token_4004_and_forced_close(fake):
    gw = await RawGateway.connect(fake.gateway_url)
    await gw.recv()
    await gw.identify("not-a-token")
    assert await gw.close_code() == 4004
    fake.set_identify_close_code(4014)
    gw = await RawGateway.connect(fake.gateway_url)
    await gw.recv()
    await gw.identify(fake.config.bot_token)
    assert await gw.close_code() == 4014


async def test_message_content_without_app_flag_4014_and_bad_intents_4013(make_fake):
    fd = make_fake(app_flags=0)
    gw = await RawGateway.connect(fd.gateway_url)
    await gw.recv()
    await gw.identify(fd.config.bot_token, INTENTS)
    assert await gw.close_code() == 4014
    gw = await RawGateway.connect(fd.gateway_url)
    await gw.recv()
    await gw.identify(fd.config.bot_token, 1 << 30)
    assert await gw.close_code() == 4013
    # without MESSAGE_CONTENT the bot may connect but sees empty content
    gw, _ = await ready_gateway(fd, intents=1 | (1 << 9))
    fd.post_as_user(fd.config.channel_id, "secret text")
    ev = (await gw.recv_until(lambda p: p.get("t") == "MESSAGE_CREATE"))[-1]
    assert ev["d"]["content"] == "" and ev["d"]["embeds"] == []
    await gw.close()


async def test_zlib_stream(fake):
    gw, ready = await ready_gateway(fake, compress=True)
    assert gw.frames_binary >= 3
    fake.post_as_user(fake.config.channel_id, "héllo 你好 🤖")
    ev = (await gw.recv_until(lambda p: p.get("t") == "MESSAGE_CREATE"))[-1]
    assert ev["d"]["content"] == "héllo 你好 🤖"
    await gw.close()


async def test_resume_replays_after_drop(fake):
    gw, ready = await ready_gateway(fake)
    seq = gw.seq
    fake.gateway_drop()
    code = await gw.close_code()
    assert code == 1006  # no close frame
    fake.post_as_user(fake.config.channel_id, "while you were away")
    gw2 = await RawGateway.connect(ready["resume_gateway_url"])
    await gw2.recv()
    await gw2.send(6, {"token": fake.config.bot_token, "session_id": ready["session_id"], "seq": seq})
    got = await gw2.recv_until(lambda p: p.get("t") == "RESUMED")
    assert [p["t"] for p in got] == ["MESSAGE_CREATE", "RESUMED"]
    assert got[0]["s"] == seq + 1 and got[0]["d"]["content"] == "while you were away"
    assert fake.resume_count() == 1 and fake.gateway_stats()["resume_path_connections"] == 1
    await gw2.close()
    # bad session -> op 9 d=false
    gw3 = await RawGateway.connect(fake.gateway_url)
    await gw3.recv()
    await gw3.send(6, {"token": fake.config.bot_token, "session_id": "nope", "seq": 1})
    assert await gw3.recv() == {"op": 9, "d": False}
    await gw3.close()


async def test_op7_reconnect_and_invalid_session(fake):
    gw, _ = await ready_gateway(fake)
    assert fake.gateway_reconnect() == 1
    assert (await gw.recv())["op"] == 7
    await gw.ws.close(4900)
    gw, _ = await ready_gateway(fake)
    fake.gateway_invalid_session(False)
    assert await gw.recv() == {"op": 9, "d": False}
    await gw.close()


async def test_double_identify_4005(fake):
    gw, _ = await ready_gateway(fake)
    await gw.identify(fake.config.bot_token)
    assert await gw.close_code() == 4005


async def test_close_1000_invalidates_session(fake):
    gw, ready = await ready_gateway(fake)
    await gw.ws.close(1000)
    await until(lambda: fake.open_gateway_connections() == 0, what="the fake to see the close")
    gw2 = await RawGateway.connect(fake.gateway_url)
    await gw2.recv()
    await gw2.send(6, {"token": fake.config.bot_token, "session_id": ready["session_id"], "seq": gw.seq})
    assert await gw2.recv() == {"op": 9, "d": False}
    await gw2.close()


async def test_unknown_ws_path_rejected(fake):
    try:
        ws = await websockets.connect(f"ws://127.0.0.1:{fake.port}/nope")
        await ws.close()
        raise AssertionError("should be rejected")
    except websockets.InvalidStatus:
        pass
