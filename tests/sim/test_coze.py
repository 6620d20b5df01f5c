from __future__ import annotations

import httpx
from cdp.sim import USER_LIMIT_ERRORS, final_parts, final_text

from .conftest import ready_gateway, user_client


def _prompt(fd, extra: str = "") -> str:
    return f'[{{"role":"user","content":"What is 2+2? {extra}"}}]\n <@{fd.config.coze_bot_ids[0]}>'


async def _collect_reply(gw, prompt_id: str, done, timeout: float = 8.0) -> list[dict]:
    events = []

    def pred(p):
        if p.get("t") in ("MESSAGE_CREATE", "MESSAGE_UPDATE") and p["d"]["id"] != prompt_id:
            events.append(p)
            return done(events)
        return False

    await gw.recv_until(pred, timeout)
    return events


async def _post(fd, content: str) -> dict:
    async with user_client(fd) as c:
        r = await c.post(f"/channels/{fd.config.channel_id}/messages", json={"content": content, "allowed_mentions": {"parse": [], "users": [fd.config.coze_bot_ids[0]]}})
        assert r.status_code == 200
        return r.json()


def _has_buttons(events) -> bool:
    return bool(events[-1]["d"].get("components"))


async def test_default_reply_sequence(fake):
    gw, _ = await ready_gateway(fake)
    prompt = _prompt(fake)
    pm = await _post(fake, prompt)
    ev = await _collect_reply(gw, pm["id"], _has_buttons)
    assert ev[0]["t"] == "MESSAGE_CREATE" and all(e["t"] == "MESSAGE_UPDATE" for e in ev[1:])
    first = ev[0]["d"]
    assert first["author"]["id"] == fake.config.coze_bot_ids[0] and first["author"]["bot"] is True
    assert first["type"] == 19 and first["message_reference"]["message_id"] == pm["id"]
    assert first["referenced_message"]["id"] == pm["id"]
    texts = [e["d"]["content"] for e in ev]
    assert 5 <= len(texts) - 1 <= 9
    assert all(texts[i + 1].startswith(texts[i]) for i in range(len(texts) - 1))  # pure extensions
    final = final_text(prompt)
    assert texts[-1] == final and "🤖" in final and "你好" in final
    stamps = [e["d"]["edited_timestamp"] for e in ev[1:]]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    buttons = ev[-1]["d"]["components"][0]["components"]
    assert len(buttons) == 3 and all(b["type"] == 2 and b["label"] for b in buttons)
    stored = [m for m in fake.messages(fake.config.channel_id) if m["id"] == first["id"]][0]
    assert stored["content"] == final and stored["components"]
    await gw.close()


async def test_variant_error_and_partial(fake):
    gw, _ = await ready_gateway(fake)
    prompt = _prompt(fake, "[[sim:error=user_limit]]")
    pm = await _post(fake, prompt)
    ev = await _collect_reply(gw, pm["id"], lambda e: True)
    assert ev[0]["d"]["content"] == USER_LIMIT_ERRORS[0] == final_text(prompt)
    prompt = _prompt(fake, "[[sim:partial]]")
    pm = await _post(fake, prompt)
    ev = await _collect_reply(gw, pm["id"], _has_buttons)
    partial = [e for e in ev if "content" not in e["d"]]
    assert partial and all(set(e["d"]) <= {"id", "channel_id", "guild_id", "embeds", "components"} for e in partial)
    assert [e for e in ev if "content" in e["d"]][-1]["d"]["content"] == final_text(prompt)
    await gw.close()


async def test_variant_text_rewrite_out_of_order(fake):
    gw, _ = await ready_gateway(fake)
    prompt = _prompt(fake, '[[sim:rewrite out_of_order text=\\"Exact answer, with quite a few words in it to make edits: café 🤖 你好.\\"]]')
    assert final_text(prompt) == "Exact answer, with quite a few words in it to make edits: café 🤖 你好."
    pm = await _post(fake, prompt)
    ev = await _collect_reply(gw, pm["id"], _has_buttons)
    texts = [e["d"]["content"] for e in ev]
    assert texts[-1] == final_text(prompt)
    assert any(not texts[i + 1].startswith(texts[i]) for i in range(len(texts) - 1))
    stamps = [e["d"]["edited_timestamp"] for e in ev[1:]]
    assert stamps != sorted(stamps)  # delivered out of order
    await gw.close()


async def test_variant_multi_long_and_image(fake):
    gw, _ = await ready_gateway(fake)
    prompt = _prompt(fake, "[[sim:long]]")
    parts = final_parts(prompt)
    assert len(parts) >= 3 and all(len(p) <= 2000 for p in parts) and len("".join(parts)) > 2000
    pm = await _post(fake, prompt)
    ev = await _collect_reply(gw, pm["id"], _has_buttons, timeout=15)
    creates = [e for e in ev if e["t"] == "MESSAGE_CREATE"]
    assert len(creates) == len(parts)
    stored = {m["id"]: m for m in fake.messages(fake.config.channel_id)}
    assert [stored[c["d"]["id"]]["content"] for c in creates] == parts
    assert [bool(stored[c["d"]["id"]]["components"]) for c in creates] == [False] * (len(parts) - 1) + [True]
    prompt = _prompt(fake, "[[sim:image_attachment no_buttons]]")
    pm = await _post(fake, prompt)
    ev = await _collect_reply(gw, pm["id"], lambda e: bool(e[-1]["d"].get("attachments")))
    att = ev[-1]["d"]["attachments"][0]
    async with httpx.AsyncClient() as c:
        r = await c.get(att["proxy_url"])
        assert r.status_code == 200 and r.content.startswith(b"\x89PNG")
    await gw.close()


async def test_drop_gateway_mid_reply_then_resume(fake):
    gw, ready = await ready_gateway(fake)
    prompt = _prompt(fake, "[[sim:drop_gateway]]")
    await _post(fake, prompt)
    assert await gw.close_code(5) == 1006
    seq = gw.seq
    gw2 = await gw.connect(ready["resume_gateway_url"])
    await gw2.recv()
    await gw2.send(6, {"token": fake.config.bot_token, "session_id": ready["session_id"], "seq": seq})
    got = await gw2.recv_until(lambda p: p.get("t") == "MESSAGE_UPDATE" and bool(p["d"].get("components")), 8)
    assert "RESUMED" in [p.get("t") for p in got]
    assert [p for p in got if p.get("t") == "MESSAGE_UPDATE"][-1]["d"]["content"] == final_text(prompt)
    await gw2.close()
