"""The API edge under failure: it never ends an answer silently nor invites a duplicate post.

`cdp serve --no-listener` talks to DynamoDB (moto) through a fault-injecting proxy
(tests/support/ddb_faults.py) while `cdp listener` writes to moto directly: the store fails for the
API only, in the middle of a request, as with DynamoDB answering 500 for a while.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator

import httpx
import openai
import pytest
from cdp.sim import FakeDiscord

from tests.support.aws import aws_env, create_tables, start_moto_server, unique_prefix
from tests.support.ddb_faults import DynamoFaultProxy
from tests.support.proc import CdpProcess, free_port, settings_env
from tests.support.stack import API_KEY, Stack, coze_reply_text, prompt_messages

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def marker() -> str:
    return "f" + uuid.uuid4().hex[:12]


class FaultStack(Stack):
    faults: DynamoFaultProxy
    replies_table: str

    def stop(self, check_logs: bool = True) -> None:
        super().stop(check_logs)
        self.faults.stop()


@pytest.fixture(scope="module")
def fstack(fake: FakeDiscord) -> Iterator[FaultStack]:
    moto = start_moto_server()
    prefix = unique_prefix("fail")
    create_tables(moto.client(), prefix)
    faults = DynamoFaultProxy(moto.url).start()
    port, health_port = free_port(), free_port()
    env = {**settings_env(fake, PORT=str(port), HOST="127.0.0.1"), **aws_env(moto, prefix)}
    listener = CdpProcess(["listener", "--health-port", str(health_port)], env, health_port).start()
    api = CdpProcess(["serve", "--no-listener"], {**env, "AWS_ENDPOINT_URL_DYNAMODB": faults.url}, port).start()
    s = FaultStack(fake, api, "dynamodb", [listener], moto)
    s.faults, s.replies_table = faults, f"{prefix}-replies"
    try:
        listener.wait_healthy()
        api.wait_healthy()
        yield s
    finally:
        faults.heal()
        s.stop()


@pytest.fixture(autouse=True)
def _no_faults_left(fstack: FaultStack) -> Iterator[None]:
    yield
    fstack.faults.heal()


async def wait_posted(fake: FakeDiscord, m: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not prompt_messages(fake, m):
        assert time.monotonic() < deadline, "the prompt never reached Discord"
        await asyncio.sleep(0.05)


async def test_a_store_failure_mid_stream_ends_with_an_error_frame_and_done(fstack):
    m = marker()
    body = {"model": "gpt-4o", "stream": True,
            "messages": [{"role": "user", "content": f"hi {m} [[sim:slow_first_token=2]]"}]}
    frames: list[str] = []
    async with httpx.AsyncClient(base_url=fstack.url, timeout=60) as http:
        async with http.stream("POST", "/v1/chat/completions", json=body, headers=AUTH) as r:
            assert r.status_code == 200
            rid = r.headers["x-request-id"]
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                frames.append(line[6:])
                if len(frames) == 1:  # the role chunk: the prompt is posted, the reply awaited
                    fstack.faults.fail_calls("Query", fstack.replies_table)
    assert fstack.faults.failed > 0
    assert frames[-1] == "[DONE]", frames
    err = json.loads(frames[-2])["error"]
    assert err["type"] == "server_error" and err["code"] == "internal_error"
    assert "posted" in err["message"] and "Traceback" not in err["message"]
    assert "dynamodb" not in err["message"].lower() and "InternalServerError" not in err["message"]
    assert not any(json.loads(f).get("choices", [{}])[0].get("finish_reason") for f in frames[:-2])
    log = fstack.api.log()
    assert sum(1 for line in log.splitlines()
               if "the stream failed after the prompt was posted" in line and rid in line) == 1, log[-3000:]
    assert len(prompt_messages(fstack.fake, m)) == 1


async def test_a_store_failure_mid_stream_raises_in_the_sdk(fstack):
    m = marker()
    async with fstack.client(max_retries=2) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o", stream=True,
            messages=[{"role": "user", "content": f"hi {m} [[sim:slow_first_token=2]]"}])
        with pytest.raises(openai.APIError) as info:
            async for _ in stream:
                fstack.faults.fail_calls("Query", fstack.replies_table)
    assert "posted" in str(info.value.message)
    assert len(prompt_messages(fstack.fake, m)) == 1


async def test_a_store_failure_while_waiting_is_a_clear_500_the_sdk_does_not_retry(fstack):
    m = marker()
    async with fstack.client(max_retries=2) as client:
        call = asyncio.create_task(client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": f"hi {m} [[sim:slow_first_token=2]]"}]))
        await wait_posted(fstack.fake, m)
        fstack.faults.fail_calls("Query", fstack.replies_table)
        with pytest.raises(openai.APIStatusError) as info:
            await call
    resp = info.value.response
    assert resp.status_code == 500 and info.value.code == "internal_error"
    assert resp.headers["x-should-retry"] == "false"
    assert info.value.type == "server_error" and "posted" in info.value.message
    assert len(prompt_messages(fstack.fake, m)) == 1  # no retry posted it again
    assert "Exception in ASGI application" not in fstack.api.log()


async def test_a_store_error_scheduling_the_channel_deletion_keeps_the_answer(fstack):
    m = marker()
    fstack.faults.fail_calls("UpdateItem", "SET delete_at")
    async with fstack.client() as client:
        resp = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": f"hello {m}"}])
    assert fstack.faults.failed > 0
    assert resp.choices[0].message.content == coze_reply_text(fstack.fake, m)
    assert "could not register the temporary channel's deletion time" in fstack.api.log()
    # the process deletes it anyway (before, it waited for the 16-minute stale sweep)
    (prompt,) = prompt_messages(fstack.fake, m)
    deadline = time.monotonic() + 15
    while prompt["channel_id"] not in {c["id"] for c in fstack.fake.deleted_channels()}:
        assert time.monotonic() < deadline, "the channel was not deleted"
        await asyncio.sleep(0.1)


async def test_a_short_out_time_on_images_is_the_timeout_error(fstack):
    words = " ".join(f"w{i}" for i in range(80))
    async with fstack.client() as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.images.generate(prompt=f'{marker()} [[sim:text="{words}" edits=80]]',
                                         extra_headers={"out-time": "1"})
    assert info.value.status_code == 504, info.value.message
    assert info.value.type == "timeout" and info.value.code == "timeout"
    assert info.value.response.headers["x-should-retry"] == "false"


@pytest.mark.parametrize("kind", [{}, [], 7, None])
def test_a_content_part_type_that_is_not_a_string_is_a_clear_400(fstack, kind):
    before = len(fstack.fake.created_channels())
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": kind, "text": "x"}]}]}
    r = httpx.post(fstack.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=10)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "messages.0.content.0.type"
    assert err["type"] == "invalid_request_error"
    assert "unhashable" not in err["message"] and "must be one of" in err["message"]
    assert len(fstack.fake.created_channels()) == before
