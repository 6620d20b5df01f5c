"""Many concurrent conversations against one `cdp serve`, each checked for cross-talk: the load test
(tests/load) and the soak (bench/soak.py) share it.

The fake Discord has no REST rate limits here and a fast Coze (edits every 50 ms): what is measured is
the proxy. Every prompt carries its own scripted reply (the sim's `[[sim:text="..."]]` directive),
made of the conversation's number and a random token, so an answer is right only if it is exactly its
own reply: another conversation's text, a truncated one or a merge of two all fail. A quarter of the
replies come as two Discord messages (`multi`), joined by the proxy; half the requests are streamed.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field

import httpx
from cdp.sim import FakeDiscord

from tests.support.fake import fast_sim_config
from tests.support.stack import Stack, start_stack

KEY = "sk-load-key-1"
NO_LIMITS = {"POST /channels/{channel_id}/messages": (1_000_000, 1.0),
             "POST /guilds/{guild_id}/channels": (1_000_000, 1.0),
             "DELETE /channels/{channel_id}": (1_000_000, 1.0)}


def load_fake() -> FakeDiscord:
    """A started fake Discord for load: no rate limits, room for many temporary channels."""
    # Discord's own heartbeat interval (41.25 s): the suite's 1 s one makes hikari call the connection
    # a zombie whenever this loaded driver process answers a heartbeat 2 s late (seen in the soak).
    return FakeDiscord(fast_sim_config(rate_limits=NO_LIMITS, default_rate_limit=(1_000_000, 1.0),
                                       global_rate_limit=1_000_000, max_channels=100_000,
                                       coze_edits=4, heartbeat_interval_ms=41_250)).start()


def load_stack(fake: FakeDiscord, **env: str) -> Stack:
    """`cdp serve` (API + listener in one process, memory store) for load: no request rate limit,
    quiet logs, channels deleted one second after use, REPLY_IDLE_TIMEOUT at its default (15 s: the
    suite's 1.5 s ends an answer whenever the loaded machine holds an edit back that long; every
    reply of the fake Coze ends with its buttons, so the idle rule is not what is tested here)."""
    return start_stack("memory", fake, PROXY_SECRET=KEY, REQUEST_RATE_LIMIT="0", LOG_LEVEL="WARNING",
                       REQUEST_OUT_TIME="60", STREAM_REQUEST_OUT_TIME="60", REPLY_IDLE_TIMEOUT="15", **env)


@dataclass
class Outcome:
    ok: int = 0
    wrong: list[str] = field(default_factory=list)  # cross-talk, truncation, errors: what and where
    seconds: list[float] = field(default_factory=list)


def expected_reply(i: int, token: str) -> str:
    return f"reply {i} {token} 你好"


def prompt_for(i: int, token: str) -> str:
    multi = " multi" if i % 4 == 1 else ""
    return f'conversation {i} ({token}) [[sim:text="{expected_reply(i, token)}"{multi}]]'


async def converse(client: httpx.AsyncClient, i: int, out: Outcome) -> None:
    """One conversation, streamed when i is odd; its answer must be exactly its own scripted reply."""
    token = secrets.token_hex(6)
    stream = i % 2 == 1
    body = {"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": prompt_for(i, token)}]}
    started = time.monotonic()
    try:
        if stream:
            text, finished = [], False
            async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                if r.status_code != 200:
                    out.wrong.append(f"#{i}: HTTP {r.status_code} {(await r.aread())[:200]!r}")
                    return
                async for line in r.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    if line == "data: [DONE]":
                        finished = True
                        break
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        out.wrong.append(f"#{i}: error frame {chunk['error']}")
                        return
                    for choice in chunk.get("choices") or []:
                        text.append((choice.get("delta") or {}).get("content") or "")
            answer = "".join(text)
            if not finished:
                out.wrong.append(f"#{i}: the stream ended without [DONE]")
                return
        else:
            r = await client.post("/v1/chat/completions", json=body)
            if r.status_code != 200:
                out.wrong.append(f"#{i}: HTTP {r.status_code} {r.text[:200]}")
                return
            answer = r.json()["choices"][0]["message"]["content"]
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        out.wrong.append(f"#{i}: {type(exc).__name__}: {exc}")
        return
    if answer != expected_reply(i, token):
        out.wrong.append(f"#{i}: answered {answer[:120]!r}, expected {expected_reply(i, token)!r}")
        return
    out.ok += 1
    out.seconds.append(time.monotonic() - started)


def client_for(stack: Stack, concurrency: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency + 10, max_keepalive_connections=concurrency + 10)
    return httpx.AsyncClient(base_url=stack.url, headers={"Authorization": f"Bearer {KEY}"}, limits=limits,
                             timeout=httpx.Timeout(90, connect=30))


async def run_concurrent(stack: Stack, n: int, first: int = 0) -> Outcome:
    """n conversations at once (numbered first..first+n-1)."""
    out = Outcome()
    async with client_for(stack, n) as client:
        await asyncio.gather(*(converse(client, first + i, out) for i in range(n)))
    return out


def status(stack: Stack) -> dict:
    r = httpx.get(stack.url + "/api/status", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    r.raise_for_status()
    return r.json()


def settle(stack: Stack, timeout: float = 30.0) -> dict:
    """/api/status once nothing is in flight and the temporary channels are deleted (or `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        body = status(stack)
        if (body["requests_in_flight"] == 0 and body["temporary_channels"]["count"] == 0) \
                or time.monotonic() > deadline:
            return body
        time.sleep(0.25)
