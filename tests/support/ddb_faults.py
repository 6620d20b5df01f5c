"""A fault-injecting HTTP proxy in front of the moto server: DynamoDB requests pass through, or get
the error DynamoDB answers when it fails (500 InternalServerError, 400 throttling) while a rule
says so. Runs in its own thread and event loop on a free loopback port; point AWS_ENDPOINT_URL at
`url`. `counts` says how many requests of each operation were failed and forwarded."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Callable
from typing import Self

from aiohttp import ClientSession, web

ERRORS = {
    500: "com.amazonaws.dynamodb.v20120810#InternalServerError",
    400: "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
}


class DynamoFaultProxy:
    """`fail(operation, body) -> status or None`: the status to answer instead of forwarding (500 or
    400 throttling), None to forward to `upstream`."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.fail: Callable[[str, dict], int | None] = lambda op, body: None
        self.counts: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_writes_to(self, table_suffix: str, status: int = 500) -> None:
        """Fail every PutItem / UpdateItem / DeleteItem on tables whose name ends with `table_suffix`."""
        writes = ("PutItem", "UpdateItem", "DeleteItem")
        self.fail = lambda op, body: status if op in writes and str(body.get("TableName", "")).endswith(
            table_suffix) else None

    def fail_calls(self, operation: str, contains: str = "", status: int = 500) -> None:
        """Fail every `operation` call ("Query", "UpdateItem"...) whose request contains `contains`."""
        self.fail = lambda op, body: status if op == operation and contains in json.dumps(body) else None

    @property
    def failed(self) -> int:
        """How many requests were answered with an injected error."""
        return sum(n for key, n in self.counts.items() if key.startswith("failed "))

    def heal(self) -> None:
        self.fail = lambda op, body: None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        data = await request.read()
        op = request.headers.get("X-Amz-Target", "").rpartition(".")[2] or request.method
        try:
            body = json.loads(data) if data else {}
        except ValueError:
            body = {}
        status = self.fail(op, body)
        if status is not None:
            self.counts[f"failed {op}"] += 1
            return web.Response(status=status, content_type="application/x-amz-json-1.0",
                                text=json.dumps({"__type": ERRORS[status], "message": "injected fault"}))
        self.counts[op] += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self._session.request(request.method, self.upstream + request.path_qs, data=data,
                                         headers=headers) as resp:
            payload = await resp.read()
            keep = {k: v for k, v in resp.headers.items()
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding")}
            return web.Response(status=resp.status, body=payload, headers=keep)

    def start(self) -> Self:
        ready = threading.Event()

        async def main() -> None:
            self._session = ClientSession()
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]
            ready.set()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(main())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="ddb-fault-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the DynamoDB fault proxy did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def shutdown() -> None:
            await self._session.close()
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
