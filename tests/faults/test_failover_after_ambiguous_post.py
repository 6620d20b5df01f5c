"""A prompt post that Discord stored but answered late with a 504, whose retry (same nonce) then gets
401: the account is refused, but the prompt may already be in the channel. Before, the proxy failed
over to the next account and posted the prompt again (a new nonce): Coze answered twice. Now the
request ends with a clear 502 that SDKs do not retry, and the prompt is in Discord once."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from tests.support.stack import API_KEY, prompt_messages, start_stack

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("status,code", [(401, 0), (403, 40002)])
async def test_no_failover_after_a_post_that_may_have_been_stored(make_fake, status, code):
    fake = make_fake()
    stack = start_stack("memory", fake)
    try:
        m = uuid.uuid4().hex
        fake.accept_then_fail("POST", "/messages", 504, delay=1.0)  # stored, then "Gateway Time-out"
        async with httpx.AsyncClient(base_url=stack.url, timeout=60,
                                     headers={"Authorization": f"Bearer {API_KEY}"}) as http:
            request = asyncio.create_task(http.post("/v1/chat/completions", json={
                "model": "gpt-4o", "messages": [{"role": "user", "content": f"hello {m}"}]}))
            while not prompt_messages(fake, m):  # stored; its 504 comes 1 s later
                assert not request.done(), request.result().text
                await asyncio.sleep(0.02)
            fake.fail_next("POST", "/messages", status, code, "refused")  # the retry is refused
            r = await request
        assert r.status_code == 502, r.text
        assert r.headers["x-should-retry"] == "false"
        assert r.json()["error"]["type"] == "server_error"
        assert len(prompt_messages(fake, m)) == 1  # posted once: no failover to another account
    finally:
        stack.stop()
