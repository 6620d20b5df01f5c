"""Operator routes: GET /, GET /healthz, GET /api/status (behind the admin key: PROXY_ADMIN_SECRET, else
PROXY_SECRET; never open), GET /metrics (Prometheus text: METRICS_TOKEN or an admin key; a chat key only while there are no admin keys),
GET /status (the status page: static HTML that asks for the key and reads /api/status) and
POST /interactions (Discord slash commands).

`install(app)` adds the router, a counter of requests in flight (ASGI middleware) and a ring buffer of
the last warnings/errors logged under `cdp.*` (secrets redacted). Both are per process: behind API
Gateway every Lambda environment has its own (there, /api/status shows that environment's view).
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from cdp.domain.metrics import DISCORD_CHANNEL_LIMIT, status_gauges
from cdp.domain.secrets import fingerprint, redact
from cdp.entry import interactions, logs
from cdp.entry.api.common import (
    ADMIN,
    BEARER,
    BodyTooLarge,
    KeyCheck,
    openai_refusal,
    operator_key,
    read_body,
    runtime_of,
)
from cdp.entry.api.runtime import Runtime
from cdp.entry.openai import errors as oe
from cdp.ports import Stores

log = logging.getLogger("cdp.entry.api.ops")

MAX_ERRORS = 20
MAX_CHANNELS_LISTED = 50
MAX_RECENT_LISTED = 50
STATUS_PAGE = Path(__file__).parent / "static" / "status.html"


# -- requests in flight & last errors ------------------------------------------------------------------
class _InFlight:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self.total = 0

    def enter(self) -> None:
        with self._lock:
            self.count += 1
            self.total += 1

    def leave(self) -> None:
        with self._lock:
            self.count -= 1


IN_FLIGHT = _InFlight()
COUNTED_PREFIXES = ("/v1/",)  # the OpenAI API; health, docs and status requests are not counted


class InFlightMiddleware:
    """Pure ASGI: a request counts until its response is fully sent (streams included)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith(COUNTED_PREFIXES):
            await self.app(scope, receive, send)
            return
        IN_FLIGHT.enter()
        try:
            await self.app(scope, receive, send)
        finally:
            IN_FLIGHT.leave()


class _RecentErrors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_ERRORS)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # redacted before it is cut: a cut through a secret would leave half of it unmatched
            entry = {"at": record.created, "level": record.levelname, "logger": record.name,
                     "message": logs.redact(record.getMessage())[:500]}
            for key in ("request_id", "status", "code", "account", "channel_id"):
                if hasattr(record, key):
                    entry[key] = getattr(record, key)
            self.records.append(entry)
        except Exception:  # a status buffer must never break logging
            pass


RECENT_ERRORS = _RecentErrors()


def _install_error_buffer() -> None:
    cdp_logger = logging.getLogger("cdp")
    if RECENT_ERRORS not in cdp_logger.handlers:
        cdp_logger.addHandler(RECENT_ERRORS)


# -- status ---------------------------------------------------------------------------------------------
class AccountStatus(BaseModel):
    account: str = Field(description="fingerprint of the user token (tok:xxxxxxxx), never the token")
    health: str = Field(description="healthy | resting | dead | unknown")
    last_used: str | None = Field(None, description="ISO time, in TZ")
    resting_until: str | None = Field(None, description="ISO time (TZ) the rest ends, when resting")
    dead_since: str | None = Field(None, description="ISO time (TZ) Discord refused the token, when dead")
    reason: str | None = None
    requests_today: int = Field(0, description="requests it posted since 00:00 UTC, seen by this process")


class BotStatus(BaseModel):
    coze_bot_id: str
    health: str = Field(description="healthy | resting | dead | unknown")
    last_used: str | None = None
    resting_until: str | None = None
    dead_since: str | None = None
    reason: str | None = None


class ChannelStatus(BaseModel):
    channel_id: str
    created_at: float
    delete_at: float | None = Field(None, description="null while the channel is in use")
    request_id: str | None = None


class TemporaryChannels(BaseModel):
    count: int
    in_use: int = Field(0, description="channels of requests still running (the others await deletion)")
    limit: int = Field(DISCORD_CHANNEL_LIMIT, description="Discord's channel limit per server")
    channels: list[ChannelStatus] = Field(description=f"the first {MAX_CHANNELS_LISTED}")


class LoggedError(BaseModel):
    at: float
    level: str
    logger: str
    message: str


class RecentRequest(BaseModel):
    id: str
    at: float
    method: str
    route: str
    model: str | None = None
    status: int
    ttft: float | None = Field(None, description="seconds to the first reply text")
    duration: float
    error: str | None = Field(None, description="OpenAI error code, Coze error kind or timeout")
    stream: bool
    account: str | None = Field(None, description="fingerprint of the account that posted the prompt")


class MinutePoint(BaseModel):
    minute: int = Field(description="epoch seconds of the minute's start")
    requests: int
    errors: int
    ttft_avg: float | None = None
    ttft_max: float | None = None


class ProcessStatus(BaseModel):
    rss_bytes: int | None = Field(None, description="resident memory of this process (Linux: /proc/self/status)")
    open_fds: int | None = Field(None, description="open file descriptors (sockets included)")
    asyncio_tasks: int = Field(description="asyncio tasks alive in the event loop")
    threads: int


class StatusResponse(BaseModel):
    status: str = Field(description="ok | degraded (gateway not ready, or no usable account)")
    mode: str = Field(description="discord | demo")
    store: str
    time: float
    uptime_seconds: float | None = None
    gateway: dict[str, Any] = Field(description="the listener's gateway state (see /healthz)")
    accounts: list[AccountStatus]
    accounts_by_health: dict[str, int]
    bots: list[BotStatus]
    bots_by_health: dict[str, int]
    bot_config: bool | None = Field(None, description="whether a bot_config.json routes the models")
    temporary_channels: TemporaryChannels
    requests_in_flight: int = Field(description="OpenAI API requests being answered by this process")
    requests_total: int
    last_errors: list[LoggedError] = Field(description=f"last {MAX_ERRORS} warnings/errors of this process")
    recent_requests: list[RecentRequest] = Field([], description=f"the last {MAX_RECENT_LISTED} API requests "
                                                                 "answered by this process, newest first")
    history: list[MinutePoint] = Field([], description="this process's requests, errors and TTFT per minute, "
                                                       "last hour, oldest first")
    process: ProcessStatus | None = Field(None, description="this process's memory, descriptors and tasks "
                                                            "(what a leak would grow; `make soak` samples it)")

    model_config = {"json_schema_extra": {"example": {
        "status": "ok", "mode": "discord", "store": "memory", "time": 1744189800.0, "uptime_seconds": 3600.0,
        "gateway": {"state": "ready", "ready": True, "detail": "", "close_code": None, "fix": None,
                    "since": 1744186200.0, "ready_count": 1, "resumes": 0},
        "accounts": [{"account": "tok:1a2b3c4d", "health": "healthy", "last_used": "2025-04-09T17:09:58+08:00",
                      "resting_until": None, "dead_since": None, "reason": None},
                     {"account": "tok:9f8e7d6c", "health": "resting", "last_used": "2025-04-09T16:00:00+08:00",
                      "resting_until": "2025-04-10T00:00:00+08:00", "dead_since": None,
                      "reason": "daily limit"}],
        "accounts_by_health": {"healthy": 1, "resting": 1},
        "bots": [{"coze_bot_id": "1300000000000000001", "health": "healthy"}],
        "bots_by_health": {"healthy": 1}, "bot_config": False,
        "temporary_channels": {"count": 1, "channels": [{"channel_id": "1234567890123456789",
                                                         "created_at": 1744189790.0, "delete_at": None,
                                                         "request_id": "req_0123abcd"}]},
        "requests_in_flight": 1, "requests_total": 42, "last_errors": []}}}


async def refresh_gateway(runtime: Runtime) -> None:
    """A listener known only by its published presence (AWS) is read now; an in-process one needs nothing."""
    refresh = getattr(runtime.gateway, "refresh", None)
    if refresh is not None:
        await refresh()


async def collect_status(runtime: Runtime) -> dict[str, Any]:
    """The facts of GET /api/status and `/cdp status`, from the runtime's service and listener."""
    settings, service = runtime.settings, runtime.service
    now = time.time()
    await refresh_gateway(runtime)
    gateway = runtime.gateway.to_dict()
    bot_config = None
    try:  # the account pool reports health itself
        facts = await service.status()
    except Exception as exc:  # the health store unreachable: still answer, with "unknown" health
        log.warning("status: could not read account health", extra={"error": type(exc).__name__})
        facts = None
    if facts is not None:
        accounts, bots = _listed(facts.get("accounts"), "accounts"), _listed(facts.get("bots"), "bots")
        bot_config = facts.get("bot_config")
    else:
        accounts = [{"account": fingerprint(t), "health": "unknown"} for t in settings.user_tokens]
        bots = [{"coze_bot_id": b, "health": "unknown"} for b in settings.coze_bot_ids]
    by_health, bots_by_health = _count(accounts), _count(bots)
    log_ = runtime.request_log
    today = log_.requests_today() if log_ is not None else {}
    for a in accounts:
        a["requests_today"] = today.get(str(a.get("account")), 0)
    try:
        channels = await service.channels.all()
    except Exception as exc:
        log.warning("status: could not list temporary channels", extra={"error": type(exc).__name__})
        channels = []
    secrets = settings.secrets()
    errors = [{**e, "message": redact(str(e["message"]), *secrets)} for e in list(RECENT_ERRORS.records)]
    usable = by_health.get("healthy", 0) + by_health.get("unknown", 0)
    ok = bool(gateway.get("ready", runtime.gateway.ready)) and (usable > 0 or not accounts)
    started = runtime.started_at or None
    return {
        "status": "ok" if ok else "degraded",
        "mode": "demo" if runtime.demo_notice else "discord",
        "store": settings.CDP_STORE,
        "time": now,
        "uptime_seconds": (now - started) if started else None,
        "gateway": gateway,
        "accounts": accounts,
        "accounts_by_health": by_health,
        "bots": bots,
        "bots_by_health": bots_by_health,
        "bot_config": bot_config if isinstance(bot_config, bool) else None,
        "temporary_channels": {
            "count": len(channels), "in_use": sum(1 for c in channels if c.delete_at is None),
            "limit": DISCORD_CHANNEL_LIMIT,
            "channels": [{"channel_id": c.channel_id, "created_at": c.created_at, "delete_at": c.delete_at,
                          "request_id": c.request_id} for c in channels[:MAX_CHANNELS_LISTED]]},
        "requests_in_flight": IN_FLIGHT.count,
        "requests_total": IN_FLIGHT.total,
        "last_errors": errors,
        "recent_requests": log_.recent_list(MAX_RECENT_LISTED) if log_ is not None else [],
        "history": log_.history() if log_ is not None else [],
        "process": process_facts(),
    }


def publish_status_gauges(runtime: Runtime, status: dict[str, Any]) -> None:
    """The status facts as gauges (accounts by state, bots resting, channels, gateway) in the
    runtime's metrics: before a /metrics scrape, and with /api/status (on Lambda: its EMF flush)."""
    metrics = runtime.metrics
    if metrics is None:
        return
    for name, value, labels in status_gauges(status):
        metrics.set(name, value, **labels)


def process_facts() -> dict[str, Any]:
    """RSS, open descriptors (Linux /proc; None elsewhere), asyncio tasks and threads of this process."""
    rss = fds = None
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                    break
        fds = len(os.listdir("/proc/self/fd"))
    except (OSError, ValueError, IndexError):
        pass
    return {"rss_bytes": rss, "open_fds": fds, "asyncio_tasks": len(asyncio.all_tasks()),
            "threads": threading.active_count()}


def _listed(value: Any, key: str) -> list[dict[str, Any]]:
    """`{"by_health": …, key: [...]}` or a plain list → the list of entries."""
    if isinstance(value, dict):
        value = value.get(key, [])
    return [dict(v) for v in value or []]


def _count(entries: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in entries:
        out[str(e.get("health"))] = out.get(str(e.get("health")), 0) + 1
    return out


class RuntimeOperations:
    """`/cdp` subcommands over a Runtime (cdp serve, and the Lambda follow-up)."""

    def __init__(self, runtime: Runtime, stores: Stores | None = None) -> None:
        self.runtime = runtime
        self.stores = stores or runtime.stores

    async def status(self) -> dict[str, Any]:
        return await collect_status(self.runtime)

    async def cleanup(self) -> dict[str, Any]:
        from cdp.app import jobs
        svc = self.runtime.service
        return await jobs.cleanup(self.runtime.settings, self.stores, svc.rest, svc)

    async def keepalive(self) -> dict[str, Any]:
        from cdp.app import jobs
        svc = self.runtime.service
        # an administrator asked for it explicitly: sent even with COZE_BOT_STAY_ACTIVE_ENABLE=0
        return await jobs.keepalive(self.runtime.settings, self.stores, svc.rest, svc, force=True)


# -- routes ---------------------------------------------------------------------------------------------
router = APIRouter()


@router.get("/", include_in_schema=False)
async def root() -> dict[str, Any]:
    return {"name": "coze-discord-proxy", "openai_base_url": "/v1", "health": "/healthz"}


@router.get("/healthz", tags=["ops"], summary="200 once the Discord gateway session is READY, else 503")
async def healthz(request: Request) -> JSONResponse:
    runtime = runtime_of(request)
    await refresh_gateway(runtime)
    gw = runtime.gateway
    body: dict[str, Any] = {"status": "ok" if gw.ready else "unavailable", "gateway": gw.to_dict(),
                            "mode": "demo" if runtime.demo_notice else "discord",
                            "store": runtime.settings.CDP_STORE}
    if runtime.demo_notice:
        body["warning"] = runtime.demo_notice
    if not gw.ready:
        body["reason"] = gw.to_dict().get("fix") or gw.to_dict().get("detail") or "gateway not ready"
    return JSONResponse(body, status_code=200 if gw.ready else 503)


@router.get("/api/status", tags=["ops"], response_model=StatusResponse, dependencies=[Depends(operator_key)],
            summary="Gateway state, accounts and bots by health, temporary channels, requests in flight, "
                    "last errors (admin key required: PROXY_ADMIN_SECRET's, else PROXY_SECRET's)")
async def api_status(request: Request) -> dict[str, Any]:
    runtime = runtime_of(request)
    status = await collect_status(runtime)
    publish_status_gauges(runtime, status)
    return status


# Issue 10: PROXY_ADMIN_SECRET, when set, guards /metrics (a chat key then gets 403); else any API key.
_metrics_api_key = KeyCheck(BEARER, refuse=openai_refusal, level=ADMIN)


async def metrics_key(request: Request) -> None:
    """/metrics: a METRICS_TOKEN token, or an admin key (PROXY_ADMIN_SECRET's; without admin keys, any
    of PROXY_SECRET's, as for /api/status); never open (with no key configured at all, refused)."""
    settings = runtime_of(request).settings
    tokens = settings.metrics_tokens
    if tokens:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        given = given.strip() if scheme.lower() == "bearer" else ""
        matched = [hmac.compare_digest(given.encode(), t.encode()) for t in tokens]
        if given and any(matched):
            return
        if not settings.api_keys and not settings.admin_keys:
            raise openai_refusal(401, "Incorrect or missing metrics token: send METRICS_TOKEN as "
                                      "Authorization: Bearer.")
    _metrics_api_key.check(request)


@router.get("/metrics", tags=["ops"], dependencies=[Depends(metrics_key)], response_class=Response,
            summary="Prometheus metrics (METRICS_TOKEN or an admin key as a Bearer token)")
async def metrics(request: Request) -> Response:
    runtime = runtime_of(request)
    exposition = getattr(runtime.metrics, "exposition", None)
    if exposition is None:
        raise oe.OpenAIError(404, "This deployment writes its metrics as CloudWatch EMF (namespace "
                                  "CozeDiscordProxy), not Prometheus text.", code="metrics_not_here")
    publish_status_gauges(runtime, await collect_status(runtime))
    from cdp.adapters.metrics_prometheus import CONTENT_TYPE

    return Response(exposition(), media_type=CONTENT_TYPE)


# The page holds no data: it asks for the key and reads /api/status with it. Inline script and style
# only, nothing from elsewhere; the key never appears in a URL or in the page.
STATUS_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


@router.get("/status", include_in_schema=False)
async def status_page() -> HTMLResponse:
    return HTMLResponse(STATUS_PAGE.read_text(encoding="utf-8"), headers=STATUS_PAGE_HEADERS)


# -- the interaction Discord posts (documentation only: the route reads the raw bytes, whose signature
# it checks, and answers bad bodies itself) ------------------------------------------------------------
class InteractionUser(BaseModel):
    id: str = Field(description="the Discord user's id")


class InteractionMember(BaseModel):
    permissions: str = Field("0", description="the member's permissions (bit field as a string); /cdp needs "
                                              "Manage Server (1<<5) or Administrator (1<<3)")
    user: InteractionUser | None = None


class InteractionOption(BaseModel):
    type: Literal[1] = Field(description="1 = a subcommand")
    name: Literal["status", "cleanup", "keepalive"] = Field(description="the subcommand (others: 'Unknown "
                                                                        "command')")


class InteractionData(BaseModel):
    name: Literal["cdp"] = Field(description="the command (others: 'Unknown command')")
    options: list[InteractionOption] = []


class Interaction(BaseModel):
    """Discord's interaction object, as far as /cdp reads it."""
    type: Literal[1, 2] = Field(description="1 = PING (answered PONG), 2 = APPLICATION_COMMAND (others: 400)")
    id: str | None = None
    application_id: str | None = None
    token: str | None = Field(None, description="the interaction's token (edits the deferred answer)")
    guild_id: str | None = Field(None, description="must be GUILD_ID")
    member: InteractionMember | None = None
    user: InteractionUser | None = Field(None, description="set instead of member in a DM (refused)")
    data: InteractionData | None = None


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its nested models written in place (a `#/$defs/...` reference
    means nothing inside an OpenAPI document). The models above are not recursive."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)


_INTERACTION_DOC = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": _inline_schema(Interaction)}}},
    "parameters": [{"name": name, "in": "header", "required": True, "schema": {"type": "string"},
                    "description": desc} for name, desc in (
        ("X-Signature-Ed25519", "Discord's Ed25519 signature (hex) of timestamp + body, checked against "
                                "DISCORD_PUBLIC_KEY; a wrong one is 401"),
        ("X-Signature-Timestamp", "the signing time (Unix seconds); too old is 401"))]}


@router.post("/interactions", tags=["ops"], include_in_schema=True, openapi_extra=_INTERACTION_DOC,
             summary="Discord interactions endpoint (slash commands); requests must be signed by Discord")
async def discord_interactions(request: Request) -> JSONResponse:
    runtime = request.app.state.runtime
    settings = runtime.settings
    try:  # refused before it is all read; handle() refuses it too (the Lambda gets the body whole)
        body = await read_body(request, interactions.MAX_BODY_BYTES)
    except BodyTooLarge:
        return JSONResponse({"error": f"the body is over {interactions.MAX_BODY_BYTES} bytes"}, status_code=413)
    outcome = interactions.handle(body, request.headers, public_key=settings.DISCORD_PUBLIC_KEY,
                                  guild_id=settings.GUILD_ID)
    job = outcome.job
    if job is not None:
        ops = RuntimeOperations(runtime)
        if job.command == "status":  # the facts are in memory: answer at once
            return JSONResponse(interactions.message(await interactions.run("status", ops)))
        runtime.service.keeper.spawn(_complete(job, ops, runtime.service.rest, time.monotonic() + 0.5))
    return JSONResponse(outcome.body, status_code=outcome.status)


async def _complete(job: interactions.Job, ops: RuntimeOperations, rest, not_before: float) -> None:
    try:
        await interactions.complete(job, ops, rest, not_before=not_before)
    except Exception as exc:
        log.warning("could not edit the slash command's response", extra={"command": job.command,
                                                                           "error": str(exc)})


def install(app: FastAPI) -> None:
    """Called once by create_app: routes, in-flight counter, error buffer."""
    _install_error_buffer()
    app.add_middleware(InFlightMiddleware)
    app.include_router(router)
