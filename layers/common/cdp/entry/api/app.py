"""FastAPI application factory.

Thin: routes validate the request, hand a ChatSpec to the ConversationService and turn its
progress into OpenAI responses. Errors always leave in the OpenAI shape with the right status.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cdp.app.conversation import ChatSpec, Conversation
from cdp.app.errors import ServiceError
from cdp.domain.coze import CozeError, CozeErrorKind
from cdp.domain.stream import DeltaAssembler
from cdp.domain.tokens import count_tokens
from cdp.entry.api import limits, ops
from cdp.entry.api.runtime import Runtime
from cdp.entry.openai import errors as oe
from cdp.entry.openai.wire import (
    SSE_DONE,
    SSE_PING,
    ChatCompletionRequest,
    chunk_body,
    completion_body,
    model_entry,
    sse,
    usage,
    usage_chunk_body,
)

log = logging.getLogger("cdp.entry.api")

# Without a bot_config.json every model name is served by COZE_BOT_ID; /v1/models lists these.
DEFAULT_MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4-turbo", "gpt-4", "gpt-3.5-turbo", "o1-mini", "dall-e-3")
MODELS_CREATED = 1_700_000_000
SSE_KEEPALIVE_SECONDS = 10.0
MAX_DELTA_CHARS = 8000  # keeps every SSE line far below the 64 KiB clients accept
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


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

    @app.middleware("http")
    async def request_id(request: Request, call_next):
        rid = "req_" + uuid.uuid4().hex
        request.state.request_id = rid
        response = await call_next(request)
        response.headers["x-request-id"] = rid
        return response

    _install_error_handlers(app)
    limits.install(app, settings, getattr(runtime.service, "ratelimits", None))  # REQUEST_RATE_LIMIT
    ops.install(app)  # GET /api/status, POST /interactions, requests-in-flight counter

    keys = [k.encode() for k in settings.api_keys]

    def authenticate(request: Request) -> str | None:
        """Bearer key against PROXY_SECRET (comma-separated). No keys configured = open API (the key
        sent, if any, still selects bot_config.json entries, as in the original)."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not keys:
            return token.strip() or None if scheme.lower() == "bearer" else None
        if scheme.lower() != "bearer" or not token.strip():
            raise oe.invalid_api_key()
        given = token.strip().encode()
        # Compare with every key (no early exit) so timing says nothing about which one matched.
        matched = [hmac.compare_digest(given, k) for k in keys]
        if not any(matched):
            raise oe.invalid_api_key()
        return token.strip()

    app.state.authenticate = authenticate  # shared with routers (cdp.entry.api.images)

    # -- routes -------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def root() -> dict[str, Any]:
        return {"name": "coze-discord-proxy", "openai_base_url": "/v1", "health": "/healthz"}

    @app.get("/healthz", tags=["ops"], summary="200 once the Discord gateway session is READY, else 503")
    async def healthz() -> JSONResponse:
        gw = runtime.gateway
        body: dict[str, Any] = {"status": "ok" if gw.ready else "unavailable", "gateway": gw.to_dict(),
                                "mode": "demo" if runtime.demo_notice else "discord",
                                "store": settings.CDP_STORE}
        if runtime.demo_notice:
            body["warning"] = runtime.demo_notice
        if not gw.ready:
            body["reason"] = gw.to_dict().get("fix") or gw.to_dict().get("detail") or "gateway not ready"
        return JSONResponse(body, status_code=200 if gw.ready else 503)

    @app.get("/v1/models", tags=["openai"])
    async def list_models(request: Request) -> dict[str, Any]:
        return {"object": "list", "data": [model_entry(m, MODELS_CREATED, "coze-discord-proxy")
                                           for m in models_for(authenticate(request))]}

    def models_for(key: str | None) -> list[str]:
        """With bot_config.json: exactly the models this key may use; else the fixed popular names."""
        allowed = runtime.service.models_for(key)
        return list(DEFAULT_MODELS) if allowed is None else allowed

    @app.get("/v1/models/{model_id:path}", tags=["openai"])
    async def get_model(model_id: str, request: Request) -> dict[str, Any]:
        if model_id not in models_for(authenticate(request)):
            raise oe.model_not_found(model_id)
        return model_entry(model_id, MODELS_CREATED, "coze-discord-proxy")

    @app.post("/v1/chat/completions", tags=["openai"], response_model=None)
    async def chat_completions(request: Request) -> Response:
        api_key = authenticate(request)
        body = await _json_body(request)
        try:
            req = ChatCompletionRequest.model_validate(body)
        except Exception as exc:  # pydantic.ValidationError
            raise _validation_to_openai(exc) from None
        spec = ChatSpec(
            request_id=request.state.request_id, model=req.model,
            messages=[m.model_dump(exclude_none=True) for m in req.messages], stream=req.stream,
            channel_id=req.channelId, timeout=_out_time(request), api_key=api_key)
        conv = await runtime.service.start(spec)  # raises ServiceError before anything is streamed
        completion_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(
                _stream(conv, completion_id, created, req.model, include_usage),
                media_type="text/event-stream", headers={**STREAM_HEADERS, "x-should-retry": "false"})
        try:
            return await _complete(request, conv, completion_id, created, req.model)
        finally:
            await conv.aclose()

    from cdp.entry.api.images import images_router
    app.include_router(images_router(runtime))  # POST /v1/images/generations, GET /files/{name}
    if not settings.ONLY_OPENAI_API:
        from cdp.entry.api.original import build_router

        app.include_router(build_router(settings))  # the original's /api/channel/*, /api/thread/*
    if docs:
        from cdp.entry.api.original import install_swagger

        install_swagger(app)  # GET /swagger/index.html (as the original), next to FastAPI's /docs
    return app


# -- chat completion bodies ----------------------------------------------------------------------
async def _complete(request: Request, conv: Conversation, cid: str, created: int, model: str) -> Response:
    last = None
    async for progress in conv.updates(heartbeat=5.0):
        last = progress
        if not progress.decision.done and await request.is_disconnected():
            log.info("client went away before the reply completed", extra={"request_id": conv.spec.request_id})
            return Response(status_code=499)
    assert last is not None
    decision, view = last.decision, last.view
    if decision.error is not None:
        raise coze_error_to_openai(decision.error)
    if decision.timeout_without_text:
        raise oe.timeout(conv.spec.timeout or conv._service.settings.REQUEST_OUT_TIME)
    body = completion_body(id=cid, created=created, model=model, content=view.text,
                           finish_reason=decision.finish_reason or "stop",
                           usage=usage(conv.prompt_tokens, count_tokens(view.text)))
    return JSONResponse(body, headers={"x-should-retry": "false"})


async def _stream(conv: Conversation, cid: str, created: int, model: str,
                  include_usage: bool) -> AsyncIterator[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse(chunk_body(id=cid, created=created, model=model, delta=delta, finish_reason=finish))

    def content_chunks(text: str) -> list[bytes]:
        return [chunk({"content": text[i:i + MAX_DELTA_CHARS]}) for i in range(0, len(text), MAX_DELTA_CHARS)]

    assembler = DeltaAssembler()
    try:
        yield chunk({"role": "assistant", "content": ""})  # headers + first chunk at once
        last = None
        async for progress in conv.updates(heartbeat=SSE_KEEPALIVE_SECONDS):
            last = progress
            if progress.decision.done:
                break
            if progress.changed:
                delta = assembler.update(progress.view.text)
                for frame in content_chunks(delta):
                    yield frame
            else:
                yield SSE_PING
        assert last is not None
        decision, view = last.decision, last.view
        if decision.error is not None or decision.timeout_without_text:
            err = (coze_error_to_openai(decision.error) if decision.error is not None
                   else oe.timeout(conv.spec.timeout or conv._service.settings.STREAM_REQUEST_OUT_TIME))
            yield sse(err.body())
            yield SSE_DONE
            return
        for frame in content_chunks(assembler.finish(view.text)):
            yield frame
        if assembler.diverged:
            log.warning("Coze rewrote text that was already streamed; the streamed answer differs from "
                        "the final one", extra={"request_id": conv.spec.request_id})
        yield chunk({}, decision.finish_reason or "stop")
        if include_usage:
            yield sse(usage_chunk_body(id=cid, created=created, model=model,
                                       usage=usage(conv.prompt_tokens, count_tokens(view.text))))
        yield SSE_DONE
    finally:
        conv.close()


def coze_error_to_openai(err: CozeError) -> oe.OpenAIError:
    """Coze's own texts never reach the client as an error message (one-api reads words like 'credit')."""
    code = {CozeErrorKind.USER_LIMIT: "coze_account_limited", CozeErrorKind.BOT_LIMIT: "coze_bot_limited"}
    if err.kind in code:
        return oe.OpenAIError(503, err.public_message, type="server_error", code=code[err.kind],
                              headers={"Retry-After": "3600", "x-should-retry": "false"})
    return oe.upstream_error(err.public_message, code="coze_error", retry=False)


def _out_time(request: Request) -> float | None:
    raw = request.headers.get("out-time")
    if raw is None or raw.strip() == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise oe.invalid_request("Header out-time must be a number of seconds.", param="out-time") from None
    if not 0 < value <= 900:
        raise oe.invalid_request("Header out-time must be between 0 and 900 seconds.", param="out-time")
    return value


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        raise oe.invalid_request("The request body is empty; send a JSON object.")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise oe.invalid_request(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise oe.invalid_request("The request body must be a JSON object.")
    return body


def _validation_to_openai(exc: Exception) -> oe.OpenAIError:
    errors = getattr(exc, "errors", lambda: [])()
    if not errors:
        return oe.invalid_request(str(exc))
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body",)]
    param = ".".join(loc) or None
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if first.get("type") == "missing":
        msg = f"Missing required parameter: '{param}'."
    elif param:
        msg = f"Invalid value for '{param}': {msg}"
    return oe.invalid_request(msg, param=param)


def _install_error_handlers(app: FastAPI) -> None:
    def reply(err: oe.OpenAIError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(oe.OpenAIError)
    async def _openai(request: Request, exc: oe.OpenAIError) -> JSONResponse:
        if exc.status >= 500:
            log.warning("request failed", extra={"status": exc.status, "code": exc.code,
                                                 "request_id": getattr(request.state, "request_id", None)})
        return reply(exc)

    @app.exception_handler(ServiceError)
    async def _service(request: Request, exc: ServiceError) -> JSONResponse:
        return await _openai(request, oe.from_service_error(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return reply(_validation_to_openai(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return reply(oe.not_found(request.url.path))
        if exc.status_code == 405:
            return reply(oe.method_not_allowed(request.method, request.url.path))
        return reply(oe.OpenAIError(exc.status_code, str(exc.detail)))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", extra={"request_id": getattr(request.state, "request_id", None)})
        return reply(oe.OpenAIError(500, "Internal error in coze-discord-proxy; see its log.",
                                    type="server_error", code="internal_error"))
