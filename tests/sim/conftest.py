from __future__ import annotations

import asyncio
import json
import zlib

import httpx
import pytest
import websockets
from cdp.sim import FakeDiscord

INTENTS = 1 | (1 << 9) | (1 << 15)  # GUILDS | GUILD_MESSAGES | MESSAGE_CONTENT = 33281


@pytest.fixture
def fake(make_fake) -> FakeDiscord:
    """A fresh fake per test here: these tests change its state (tokens, injected failures)."""
    return make_fake()


def bot_client(fd: FakeDiscord) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=fd.base_url, headers={"Authorization": f"Bot {fd.config.bot_token}"})


def user_client(fd: FakeDiscord, idx: int = 0) -> httpx.AsyncClient:
    tok = list(fd.config.user_tokens)[idx]
    return httpx.AsyncClient(base_url=fd.base_url, headers={"Authorization": tok})


class RawGateway:
    """Minimal gateway client written from the docs, used to check the fake (not our product client)."""

    def __init__(self, ws, compress: bool) -> None:
        self.ws = ws
        self.inflator = zlib.decompressobj() if compress else None
        self.buf = bytearray()
        self.seq = None
        self.frames_binary = 0

    @classmethod
    async def connect(cls, url: str, compress: bool = False, **params) -> RawGateway:
        q = "v=10&encoding=json" + ("&compress=zlib-stream" if compress else "")
        for k, v in params.items():
            q += f"&{k}={v}"
        ws = await websockets.connect(f"{url}?{q}", max_size=None)
        return cls(ws, compress)

    async def recv(self, timeout: float = 5.0) -> dict:
        while True:
            data = await asyncio.wait_for(self.ws.recv(), timeout)
            if self.inflator is not None:
                assert isinstance(data, bytes)
                self.frames_binary += 1
                self.buf.extend(data)
                if not self.buf.endswith(b"\x00\x00\xff\xff"):
                    continue
                data = self.inflator.decompress(bytes(self.buf)).decode("utf-8")
                self.buf.clear()
            p = json.loads(data)
            if p.get("s") is not None:
                self.seq = p["s"]
            return p

    async def recv_until(self, pred, timeout: float = 5.0) -> list[dict]:
        out = []
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            p = await self.recv(max(0.01, end - loop.time()))
            out.append(p)
            if pred(p):
                return out

    async def send(self, op: int, d) -> None:
        await self.ws.send(json.dumps({"op": op, "d": d}))

    async def identify(self, token: str, intents: int = INTENTS) -> None:
        await self.send(2, {"token": token, "intents": intents, "properties": {"os": "linux", "browser": "t", "device": "t"}})

    async def close_code(self, timeout: float = 5.0) -> int:
        try:
            while True:
                await asyncio.wait_for(self.ws.recv(), timeout)
        except websockets.ConnectionClosed as e:
            return e.rcvd.code if e.rcvd else 1006

    async def close(self) -> None:
        await self.ws.close()


async def ready_gateway(fd: FakeDiscord, compress: bool = False, intents: int = INTENTS) -> tuple[RawGateway, dict]:
    gw = await RawGateway.connect(fd.gateway_url, compress)
    hello = await gw.recv()
    assert hello["op"] == 10
    await gw.identify(fd.config.bot_token, intents)
    ready = await gw.recv()
    assert ready["t"] == "READY"
    if intents & 1:
        gc = await gw.recv()
        assert gc["t"] == "GUILD_CREATE"
    return gw, ready["d"]
