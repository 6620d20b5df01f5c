"""A minimal reference relay: the floor the proxy's streaming is measured against (bench/stream_bench.py).

A raw Discord gateway client (websockets: HELLO, IDENTIFY, heartbeats, MESSAGE_CREATE/UPDATE of the
Coze bot) and one SSE endpoint, POST /v1/chat/completions: it posts the last user message as a user
through REST (mention last, like the proxy), then forwards each edit's new text the moment the edit
arrives, and finishes when the buttons come. Nothing else: no keys, no store, no token counting, no
rewrite handling (a reply that rewrites shown text just stops growing), no reconnects.

    python bench/relay.py --port P    (settings from the environment: DISCORD_API_BASE, BOT_TOKEN,
                                        USER_AUTHORIZATION, CHANNEL_ID, COZE_BOT_ID)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

import aiohttp
import websockets
from aiohttp import web

INTENTS = (1 << 0) | (1 << 9) | (1 << 15)  # GUILDS, GUILD_MESSAGES, MESSAGE_CONTENT


class Reply:
    """What one prompt's reply has shown so far, and the queue its SSE response reads."""

    def __init__(self) -> None:
        self.shown = ""
        self.done = False
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.created = time.monotonic()


class Relay:
    def __init__(self) -> None:
        self.api = os.environ["DISCORD_API_BASE"].rstrip("/")
        self.bot_token = os.environ["BOT_TOKEN"]
        self.user_token = os.environ["USER_AUTHORIZATION"].split(",")[0].strip()
        self.channel = os.environ["CHANNEL_ID"]
        self.coze = os.environ["COZE_BOT_ID"]
        self.replies: dict[str, Reply] = {}  # prompt message id -> reply (also before the POST returned)
        self.ready = asyncio.Event()
        self.http: aiohttp.ClientSession | None = None

    # -- gateway -----------------------------------------------------------------------------------
    async def gateway(self) -> None:
        async with self.http.get(f"{self.api}/gateway/bot", headers={"Authorization": f"Bot {self.bot_token}"}) as r:
            url = (await r.json())["url"]
        async with websockets.connect(f"{url}?v=10&encoding=json", max_size=None, compression=None) as ws:
            hello = json.loads(await ws.recv())
            seq: list[int | None] = [None]

            async def beat() -> None:
                while True:
                    await asyncio.sleep(hello["d"]["heartbeat_interval"] / 1000)
                    await ws.send(json.dumps({"op": 1, "d": seq[0]}))

            await ws.send(json.dumps({"op": 2, "d": {"token": self.bot_token, "intents": INTENTS,
                                                      "properties": {"os": "linux", "browser": "relay", "device": "relay"}}}))
            beater = asyncio.create_task(beat())
            try:
                async for raw in ws:
                    p = json.loads(raw)
                    if p.get("s") is not None:
                        seq[0] = p["s"]
                    if p["op"] != 0:
                        continue
                    if p["t"] == "READY":
                        self.ready.set()
                    elif p["t"] in ("MESSAGE_CREATE", "MESSAGE_UPDATE"):
                        self.on_message(p["d"])
            finally:
                beater.cancel()

    def on_message(self, d: dict) -> None:
        if (d.get("author") or {}).get("id") != self.coze:
            return
        prompt_id = (d.get("message_reference") or {}).get("message_id")
        if not prompt_id:
            return
        reply = self.replies.get(prompt_id)
        if reply is None:  # the reply began before our POST returned
            reply = self.replies[prompt_id] = Reply()
        content = d.get("content")
        if isinstance(content, str) and content.startswith(reply.shown) and len(content) > len(reply.shown):
            reply.queue.put_nowait(content[len(reply.shown):])
            reply.shown = content
        if d.get("components") and not reply.done:
            reply.done = True
            reply.queue.put_nowait(None)

    # -- API ---------------------------------------------------------------------------------------
    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        text = next((m["content"] for m in reversed(body["messages"]) if m.get("role") == "user"), "")
        async with self.http.post(f"{self.api}/channels/{self.channel}/messages",
                                  headers={"Authorization": self.user_token},
                                  json={"content": f"{text}\n<@{self.coze}>"}) as r:
            if r.status != 200:
                return web.json_response({"error": {"message": f"discord {r.status}"}}, status=502)
            prompt_id = (await r.json())["id"]
        reply = self.replies.setdefault(prompt_id, Reply())
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        cid, created = f"chatcmpl-{prompt_id}", int(time.time())

        def frame(delta: dict, finish: str | None = None) -> bytes:
            chunk = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": body.get("model", ""),
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"

        try:
            await resp.write(frame({"role": "assistant", "content": ""}))
            while True:
                piece = await asyncio.wait_for(reply.queue.get(), 60)
                if piece is None:
                    break
                await resp.write(frame({"content": piece}))
            await resp.write(frame({}, "stop") + b"data: [DONE]\n\n")
        finally:
            self.replies.pop(prompt_id, None)
        return resp

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": self.ready.is_set()}, status=200 if self.ready.is_set() else 503)


async def main(port: int) -> None:
    relay = Relay()
    relay.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))  # httpx's default pool, like the proxy
    app = web.Application()
    app.router.add_post("/v1/chat/completions", relay.chat)
    app.router.add_get("/healthz", relay.healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    try:
        await relay.gateway()  # runs until the gateway closes; the bench stops us with SIGTERM
    finally:
        await runner.cleanup()
        await relay.http.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    try:
        from uvloop import run
    except ImportError:
        from asyncio import run
    run(main(ap.parse_args().port))
