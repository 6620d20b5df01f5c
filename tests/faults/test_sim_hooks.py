"""The fake Discord's fault hook for "Discord did it but said it failed" (accept_then_fail)."""

from __future__ import annotations

import httpx


async def test_accept_then_fail_stores_the_message_then_answers_the_error(make_fake):
    fd = make_fake()
    token = next(iter(fd.config.user_tokens))
    path = f"/channels/{fd.config.channel_id}/messages"
    fd.accept_then_fail("POST", "/messages", status=504, delay=0.05)
    async with httpx.AsyncClient(base_url=fd.base_url, headers={"Authorization": token}) as c:
        body = {"content": "once", "nonce": "n-accept-1", "enforce_nonce": True}
        r = await c.post(path, json=body)
        assert r.status_code == 504
        stored = [m for m in fd.messages(fd.config.channel_id) if m.get("nonce") == "n-accept-1"]
        assert len(stored) == 1  # Discord did post it
        again = await c.post(path, json=body)  # the rule is spent; the retry with the same nonce...
        assert again.status_code == 200 and again.json()["id"] == stored[0]["id"]  # ...gets the same message
    assert len([m for m in fd.messages(fd.config.channel_id) if m.get("nonce") == "n-accept-1"]) == 1
