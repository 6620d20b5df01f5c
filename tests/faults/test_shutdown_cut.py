"""SIGTERM to `cdp serve` while a reply takes longer than uvicorn's drain (5 s): the requests still
running are cancelled. Before, a non-streamed one got uvicorn's bare `500 Internal Server Error` (no
OpenAI error, no `x-should-retry: false`: the SDKs retried and posted the prompt again) and a stream
was cut mid-body without an error frame or `[DONE]`. Now both end clearly (cdp.entry.api.drain)."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid

import httpx
import pytest

from tests.support.stack import API_KEY, MODES, prompt_messages, start_stack

pytestmark = pytest.mark.e2e

SLOW = "[[sim:slow_first_token seconds=30]]"  # Coze answers long after the drain


@pytest.mark.parametrize("mode", MODES)
async def test_requests_the_shutdown_cuts_end_with_a_clear_error(fake, mode):
    stack = start_stack(mode, fake)
    try:
        m1, m2 = uuid.uuid4().hex, uuid.uuid4().hex
        auth = {"Authorization": f"Bearer {API_KEY}"}

        def body(m: str, stream: bool) -> dict:
            return {"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": f"{SLOW} {m}"}]}

        async with httpx.AsyncClient(base_url=stack.url, headers=auth, timeout=60) as http:
            async def plain() -> httpx.Response:
                return await http.post("/v1/chat/completions", json=body(m1, False))

            async def streamed() -> tuple[int, list[str]]:
                async with http.stream("POST", "/v1/chat/completions", json=body(m2, True)) as r:
                    return r.status_code, [line async for line in r.aiter_lines() if line.startswith("data:")]

            tasks = [asyncio.create_task(plain()), asyncio.create_task(streamed())]
            deadline = asyncio.get_running_loop().time() + 20
            while not (prompt_messages(fake, m1) and prompt_messages(fake, m2)):
                assert asyncio.get_running_loop().time() < deadline, "the prompts were never posted"
                await asyncio.sleep(0.05)
            stack.api.proc.send_signal(signal.SIGTERM)
            resp, (status, frames) = await asyncio.gather(*tasks)

        assert resp.status_code == 503, resp.text
        assert resp.headers["x-should-retry"] == "false"  # the prompt is posted: a retry would post it again
        err = resp.json()["error"]
        assert err["code"] == "shutting_down" and err["type"] == "server_error" and "shutting down" in err["message"]
        assert status == 200
        assert frames[-1] == "data: [DONE]"
        last = json.loads(frames[-2][5:])
        assert last["error"]["code"] == "shutting_down"
        assert await asyncio.to_thread(stack.api.wait_exit, 30) == 0
        assert len(prompt_messages(fake, m1)) == 1 and len(prompt_messages(fake, m2)) == 1
        # The cut requests' channels are released too: their deletion (due after CHANNEL_AUTO_DEL_TIME,
        # 1 s) is done before the process exits. A cut request that never handed its channel back left
        # it registered "in use" (the fault run's leaked channel): deleted only 15 min later as stale.
        left = [c["name"] for c in fake.channels() if c.get("name", "").startswith("cdp-chat-")]
        assert left == [], left
    finally:
        stack.stop()
