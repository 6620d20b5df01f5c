"""ASGI app (REST + Gateway + /_sim control API), FakeDiscord (background thread) and serve()."""

from __future__ import annotations

import asyncio
import copy
import json
import socket
import threading
from collections.abc import Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .config import SimConfig
from .core import Sim
from .rest import handle_api, handle_attachment, handle_cdn

GATEWAY_PATHS = ("/gateway", "/gateway/", "/gateway-resume", "/gateway-resume/")


# ----------------------------------------------------------------------------- fault / inspection ops
def op_inject_429(sim: Sim, route_substring: str, count: int = 1, retry_after: float = 1.0, global_: bool = False, method: str | None = None, scope: str | None = None) -> None:
    sim.inject_rules.append({"path": route_substring, "count": int(count), "retry_after": float(retry_after), "global": bool(global_), "method": method, "scope": scope})


def op_fail_next(sim: Sim, method: str | None, path_substring: str, status: int, discord_code: int, message: str, count: int = 1) -> None:
    sim.fail_rules.append({"method": method, "path": path_substring, "status": int(status), "code": int(discord_code), "message": message, "count": int(count)})


def op_accept_then_fail(sim: Sim, method: str | None, path_substring: str, status: int = 504, discord_code: int = 0, message: str = "504: Gateway Time-out", delay: float = 0.0, count: int = 1) -> None:
    """The next `count` matching requests are carried out (a posted message is stored and dispatched),
    then answered, after `delay` seconds, with `status`: what a client sees when Discord accepted a
    request but its edge timed out (Cloudflare's 504) or the answer was lost on the way."""
    sim.accept_then_fail_rules.append({"method": method, "path": path_substring, "status": int(status), "code": int(discord_code), "message": message, "delay": float(delay), "count": int(count)})


def op_post_as_user(sim: Sim, channel_id: str, content: str, user_id: str | None = None, allowed_mentions: dict | None = None) -> dict:
    uid = user_id or next(iter(sim.cfg.user_tokens.values()))
    body: dict[str, Any] = {"content": content}
    if allowed_mentions is not None:
        body["allowed_mentions"] = allowed_mentions
    msg, _ = sim.post_message(channel_id, uid, body)
    return msg


def op_add_old_channel(sim: Sim, name: str, age: float = 0.0, type: int = 0, parent_id: str | None = None) -> dict:
    """A channel that has existed for `age` seconds (its snowflake id says so), e.g. one a crashed
    proxy left behind; no REST call, no gateway event (it predates this session)."""
    import random
    import time

    from .util import DISCORD_EPOCH_MS

    ms = int((time.time() - float(age)) * 1000) - DISCORD_EPOCH_MS
    while True:
        cid = str(ms << 22 | 1 << 17 | random.getrandbits(12))
        if cid not in sim.channels:
            break
    return copy.deepcopy(sim._add_channel({"id": cid, "type": int(type), "name": name, "parent_id": parent_id}))


OPS: dict[str, Callable[..., Any]] = {
    "info": lambda sim: sim.info(),
    "channels": lambda sim: sim.snapshot("channels"),
    "all_channels": lambda sim: sim.snapshot("all_channels"),
    "created_channels": lambda sim: sim.snapshot("created"),
    "deleted_channels": lambda sim: sim.snapshot("deleted"),
    "messages": lambda sim, channel_id: sim.snapshot("messages", channel_id),
    "request_log": lambda sim: sim.snapshot("request_log"),
    "clear_request_log": lambda sim: sim.request_log.clear(),
    "gateway_stats": lambda sim: sim.gateway.stats(),
    "gateway_connections": lambda sim: sim.gateway.connections_total,
    "open_gateway_connections": lambda sim: len(sim.gateway.current_conns()),
    "identify_count": lambda sim: sim.gateway.identifies,
    "resume_count": lambda sim: sim.gateway.resumes,
    "inject_429": op_inject_429,
    "fail_next": op_fail_next,
    "accept_then_fail": op_accept_then_fail,
    "revoke_token": lambda sim, token: sim.revoked.add(token),
    "mark_unverified": lambda sim, token: sim.unverified.add(token),
    "set_max_channels": lambda sim, n: setattr(sim, "max_channels", int(n)),
    "set_app_flags": lambda sim, flags: setattr(sim.cfg, "app_flags", int(flags)),
    "gateway_reconnect": lambda sim: sim.gateway.reconnect(),
    "gateway_invalid_session": lambda sim, resumable=False: sim.gateway.invalid_session(bool(resumable)),
    "gateway_drop": lambda sim: sim.gateway.drop(),
    "gateway_close": lambda sim, code=4000, reason="": sim.gateway.close_all(int(code), reason),
    "gateway_request_heartbeat": lambda sim: sim.gateway.request_heartbeat(),
    "gateway_stop_acks": lambda sim, enabled=True: setattr(sim.gateway, "stop_acks", bool(enabled)),
    "set_identify_close_code": lambda sim, code=None: setattr(sim.gateway, "forced_identify_close", None if code is None else int(code)),
    "post_as_user": op_post_as_user,
    "add_old_channel": op_add_old_channel,
    "remove_member": lambda sim, user_id: sim.non_members.add(str(user_id)),
    "set_role_permissions": lambda sim, role_id, permissions: sim.set_role_permissions(str(role_id), int(permissions)),
    "bot_role_id": lambda sim: sim.member_roles[sim.cfg.bot_user_id][0],
    "issue_interaction": lambda sim, name, subcommand=None, user_id=None, guild_id=None: sim.issue_interaction(name, subcommand, user_id, guild_id),
    "interaction_responses": lambda sim: copy.deepcopy(sim.interaction_responses),
    "commands": lambda sim, scope="global": copy.deepcopy(sim.commands.get(scope, [])),
    "add_channels": lambda sim, n, prefix="filler-": len([sim._add_channel({"id": sim.ids.next(), "type": 0, "name": f"{prefix}{i}", "parent_id": None}, record=False) for i in range(int(n))]),
}


def build_app(sim: Sim) -> Callable:
    async def api(request: Request) -> Response:
        return await handle_api(sim, request)

    async def attachment(request: Request) -> Response:
        return await handle_attachment(sim, request)

    async def cdn(request: Request) -> Response:
        return await handle_cdn(sim, request)

    async def control(request: Request) -> Response:
        name = request.path_params["op"].replace("/", "_").replace("-", "_")
        fn = OPS.get(name)
        if fn is None:
            return JSONResponse({"error": f"unknown control op {name}", "ops": sorted(OPS)}, status_code=404)
        kwargs: dict[str, Any] = dict(request.query_params)
        raw = await request.body()
        if raw:
            try:
                kwargs.update(json.loads(raw))
            except ValueError:
                return JSONResponse({"error": "invalid JSON"}, status_code=400)
        if "global" in kwargs:
            kwargs["global_"] = kwargs.pop("global")
        try:
            result = fn(sim, **kwargs)
        except TypeError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        except Exception as e:  # ApiError etc.
            return JSONResponse({"error": repr(e)}, status_code=400)
        return JSONResponse({"ok": True, "result": result})

    async def messages(request: Request) -> Response:
        return JSONResponse({"ok": True, "result": sim.snapshot("messages", request.path_params["channel_id"])})

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    http_app = Starlette(
        routes=[
            Route("/api/{rest:path}", api, methods=methods),
            Route("/attachments/{channel_id}/{attachment_id}/{filename}", attachment, methods=["GET", "HEAD"]),
            Route("/cdn/{name}", cdn, methods=["GET", "HEAD"]),
            Route("/_sim/messages/{channel_id}", messages, methods=["GET"]),
            Route("/_sim/{op:path}", control, methods=["GET", "POST"]),
        ]
    )

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            if scope["path"] in GATEWAY_PATHS:
                await sim.gateway.handle(scope, receive, send)
            else:
                await receive()
                await send({"type": "websocket.close", "code": 1008})
            return
        await http_app(scope, receive, send)

    return app


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _server(sim: Sim) -> uvicorn.Server:
    cfg = uvicorn.Config(
        build_app(sim),
        lifespan="off",
        log_level="warning",
        access_log=False,
        ws="websockets-sansio",
        ws_ping_interval=None,
        ws_ping_timeout=None,
        ws_max_size=16 * 1024 * 1024,
        timeout_graceful_shutdown=1,
    )
    return uvicorn.Server(cfg)


async def serve(config: SimConfig | None = None, *, on_ready: Callable[[Sim], None] | None = None) -> None:
    """Run the fake Discord in the current event loop until cancelled."""
    sim = Sim(config or SimConfig())
    sock = _bind(sim.cfg.host, sim.cfg.port)
    sim.port = sock.getsockname()[1]
    server = _server(sim)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                await task
                return
            await asyncio.sleep(0.01)
        if on_ready is not None:
            on_ready(sim)
        await task
    finally:
        server.should_exit = True
        for t in list(sim.coze.tasks):
            t.cancel()
        if not task.done():
            await asyncio.wait([task], timeout=3)
        sock.close()


class FakeDiscord:
    """The fake Discord in a background thread with its own event loop."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.sim: Sim | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._sock: socket.socket | None = None

    # lifecycle
    def start(self) -> FakeDiscord:
        if self._thread is not None:
            return self
        self.sim = Sim(self.config)
        self._sock = _bind(self.config.host, self.config.port)
        self.sim.port = self._sock.getsockname()[1]
        self._server = _server(self.sim)
        ready = threading.Event()
        error: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self.loop = loop
            asyncio.set_event_loop(loop)

            async def main() -> None:
                task = asyncio.ensure_future(self._server.serve(sockets=[self._sock]))
                while not self._server.started and not task.done():  # noqa: ASYNC110 - uvicorn exposes only a `started` flag
                    await asyncio.sleep(0.01)
                ready.set()
                await task

            try:
                loop.run_until_complete(main())
            except BaseException as e:  # pragma: no cover
                error.append(e)
                ready.set()
            finally:
                for t in asyncio.all_tasks(loop):
                    t.cancel()
                try:
                    loop.run_until_complete(asyncio.sleep(0))
                except Exception:
                    pass
                loop.close()

        self._thread = threading.Thread(target=run, name=f"fake-discord-{self.sim.port}", daemon=True)
        self._thread.start()
        ready.wait(15)
        if error:
            raise RuntimeError("fake discord failed to start") from error[0]
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
        self._thread.join(10)
        if self._sock is not None:
            self._sock.close()
        self._thread = None

    def __enter__(self) -> FakeDiscord:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # urls
    @property
    def port(self) -> int:
        assert self.sim is not None
        return self.sim.port

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://{self.config.host}:{self.port}/gateway"

    # run an op on the server loop
    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        assert self.sim is not None and self.loop is not None, "FakeDiscord not started"
        fn = OPS[name]
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            return fn(self.sim, *args, **kwargs)

        async def call() -> Any:
            return fn(self.sim, *args, **kwargs)

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(10)

    # inspection
    def info(self) -> dict: return self._call("info")
    def channels(self) -> list[dict]: return self._call("channels")  # of the proxy's server (GUILD_ID)
    def all_channels(self) -> list[dict]: return self._call("all_channels")  # also the other server's, the DM
    def created_channels(self) -> list[dict]: return self._call("created_channels")
    def deleted_channels(self) -> list[dict]: return self._call("deleted_channels")
    def messages(self, channel_id: str) -> list[dict]: return self._call("messages", str(channel_id))
    def request_log(self) -> list[dict]: return self._call("request_log")
    def clear_request_log(self) -> None: self._call("clear_request_log")
    def gateway_stats(self) -> dict: return self._call("gateway_stats")
    def gateway_connections(self) -> int: return self._call("gateway_connections")
    def open_gateway_connections(self) -> int: return self._call("open_gateway_connections")
    def identify_count(self) -> int: return self._call("identify_count")
    def resume_count(self) -> int: return self._call("resume_count")

    # faults
    def inject_429(self, route_substring: str, count: int = 1, retry_after: float = 1.0, global_: bool = False, method: str | None = None, scope: str | None = None) -> None:
        self._call("inject_429", route_substring, count, retry_after, global_, method, scope)

    def fail_next(self, method: str | None, path_substring: str, status: int, discord_code: int, message: str, count: int = 1) -> None:
        self._call("fail_next", method, path_substring, status, discord_code, message, count)

    def accept_then_fail(self, method: str | None, path_substring: str, status: int = 504, discord_code: int = 0, message: str = "504: Gateway Time-out", delay: float = 0.0, count: int = 1) -> None:
        """Carry out the next matching request(s), then answer `status` after `delay` s (see op_accept_then_fail)."""
        self._call("accept_then_fail", method, path_substring, status, discord_code, message, delay, count)

    def revoke_token(self, token: str) -> None: self._call("revoke_token", token)
    def mark_unverified(self, user_token: str) -> None: self._call("mark_unverified", user_token)
    def set_max_channels(self, n: int) -> None: self._call("set_max_channels", n)
    def set_app_flags(self, flags: int) -> None: self._call("set_app_flags", flags)
    def gateway_reconnect(self) -> int: return self._call("gateway_reconnect")
    def gateway_invalid_session(self, resumable: bool = False) -> int: return self._call("gateway_invalid_session", resumable)
    def gateway_drop(self) -> int: return self._call("gateway_drop")
    def gateway_close(self, code: int = 4000, reason: str = "") -> int: return self._call("gateway_close", code, reason)
    def gateway_request_heartbeat(self) -> int: return self._call("gateway_request_heartbeat")
    def gateway_stop_acks(self, enabled: bool = True) -> None: self._call("gateway_stop_acks", enabled)
    def set_identify_close_code(self, code: int | None) -> None: self._call("set_identify_close_code", code)
    def add_old_channel(self, name: str, age: float = 0.0, type: int = 0, parent_id: str | None = None) -> dict:
        """A channel created `age` seconds ago (by its snowflake id), without REST calls."""
        return self._call("add_old_channel", name, age, type, parent_id)
    def post_as_user(self, channel_id: str, content: str, user_id: str | None = None, allowed_mentions: dict | None = None) -> dict:
        return self._call("post_as_user", channel_id, content, user_id, allowed_mentions)

    # guild membership, permissions, application commands and interactions
    def remove_member(self, user_id: str) -> None: self._call("remove_member", user_id)
    def set_role_permissions(self, role_id: str, permissions: int) -> None: self._call("set_role_permissions", role_id, permissions)
    def bot_role_id(self) -> str: return self._call("bot_role_id")
    def issue_interaction(self, name: str, subcommand: str | None = None, user_id: str | None = None, guild_id: str | None = None) -> dict:
        """An APPLICATION_COMMAND interaction as Discord would send it; its token works for the webhook routes."""
        return self._call("issue_interaction", name, subcommand, user_id, guild_id)
    def interaction_responses(self) -> list[dict]: return self._call("interaction_responses")
    def commands(self, scope: str = "global") -> list[dict]: return self._call("commands", scope)
    def add_channels(self, n: int, prefix: str = "filler-") -> int:
        """Fill the guild with `n` text channels (toward the 500-channel limit) without REST calls."""
        return self._call("add_channels", n, prefix)
