"""FastAPI application factory: middleware, error handlers (every error leaves in the OpenAI shape
with the right status) and the routers of this package."""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cdp.app.errors import ServiceError
from cdp.entry.api import chat, images, limits, models, observe, ops, original
from cdp.entry.api.common import validation_to_openai
from cdp.entry.api.drain import ShutdownCutMiddleware
from cdp.entry.api.runtime import Runtime
from cdp.entry.openai import errors as oe

log = logging.getLogger("cdp.entry.api")


def create_app(runtime: Runtime) -> FastAPI:
    settings = runtime.settings
    docs = settings.SWAGGER_ENABLE
    app = FastAPI(title="coze-discord-proxy", version="0.1.0",
                  description="OpenAI-compatible API answered by Coze bots through Discord.",
                  docs_url="/docs" if docs else None, redoc_url=None,
                  openapi_url="/openapi.json" if docs else None)
    app.state.runtime = runtime
    app.add_middleware(
        CORSMiddleware, allow_origins=["*"], allow_credentials=False,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "x-stainless-*", "proxy-secret", "out-time",
                       "OpenAI-Organization", "OpenAI-Project", "x-stainless-arch", "x-stainless-lang",
                       "x-stainless-os", "x-stainless-package-version", "x-stainless-runtime",
                       "x-stainless-runtime-version", "x-stainless-retry-count", "x-stainless-timeout",
                       "x-stainless-async", "x-stainless-helper-method", "x-stainless-poll-helper"],
        expose_headers=["x-request-id", "x-should-retry", "Retry-After"])

    app.add_middleware(ShutdownCutMiddleware)  # a request the shutdown cancels ends clearly, not cut
    app.add_middleware(RequestIdMiddleware)

    _install_error_handlers(app)
    limits.install(app, settings, runtime.service.ratelimits)  # REQUEST_RATE_LIMIT
    ops.install(app)  # /, /healthz, /api/status, /interactions, requests-in-flight counter
    app.include_router(models.build_router(runtime))  # /v1/models, /v1/models/{id}
    app.include_router(chat.build_router(runtime))  # POST /v1/chat/completions
    app.include_router(images.build_router(runtime))  # POST /v1/images/generations, GET /files/{name}
    if not settings.ONLY_OPENAI_API:
        original.install(app)  # the original's /api/channel/*, /api/thread/*
    if docs:
        original.install_swagger(app)  # GET /swagger/index.html (as the original), next to FastAPI's /docs
    observe.install(app, runtime)  # metrics and recent requests of every request (outermost)
    return app


class RequestIdMiddleware:
    """Pure ASGI: `request.state.request_id` and the `x-request-id` response header. Not
    `@app.middleware("http")` (BaseHTTPMiddleware), which relays every body chunk of a stream through
    an extra task and memory stream: one more hop per SSE frame."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = "req_" + uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        header = (b"x-request-id", rid.encode())

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", ()) if h[0].lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        await self.app(scope, receive, send_with_id)


def _install_error_handlers(app: FastAPI) -> None:
    def reply(err: oe.OpenAIError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(oe.OpenAIError)
    async def _openai(request: Request, exc: oe.OpenAIError) -> JSONResponse:
        if exc.status >= 500:
            log.warning("request failed", extra={"status": exc.status, "code": exc.code,
                                                 "request_id": getattr(request.state, "request_id", None)})
        # Once the prompt is posted, a retry would post it again: no 5xx invites one.
        return reply(oe.no_retry_once_posted(exc, oe.is_posted(request.state)))

    @app.exception_handler(ServiceError)
    async def _service(request: Request, exc: ServiceError) -> JSONResponse:
        return await _openai(request, oe.from_service_error(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return reply(validation_to_openai(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return reply(oe.not_found(request.url.path))
        if exc.status_code == 405:
            return reply(oe.method_not_allowed(request.method, request.url.path))
        return reply(oe.OpenAIError(exc.status_code, str(exc.detail)))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        rid = getattr(request.state, "request_id", None)
        log.exception("unexpected error", extra={"request_id": rid})
        if oe.is_posted(request.state):
            return reply(oe.failed_after_post(rid))
        return reply(oe.OpenAIError(500, "Internal error in coze-discord-proxy; see its log.",
                                    type="server_error", code="internal_error"))
