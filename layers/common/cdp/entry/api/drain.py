"""The end of a request that the server's shutdown cut short (`cdp serve` on SIGTERM).

uvicorn drains in-flight requests for `timeout_graceful_shutdown` seconds, then cancels the ones still
running. Left alone, a cancelled request ends as uvicorn's bare `500 Internal Server Error` (no OpenAI
error, no `x-should-retry`: the SDKs retry and post the prompt again) or, for a stream, as a connection
closed mid-body without an error frame or `[DONE]`. This pure ASGI middleware turns that cancellation
into a clear end: a 503 in the OpenAI shape (`x-should-retry: false` once the prompt is posted), or,
once a stream has started, an error frame then `[DONE]`.
"""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

from cdp.entry.asgi import send_json
from cdp.entry.openai import errors as oe
from cdp.entry.openai.wire import SSE_DONE, sse

log = logging.getLogger("cdp.entry.api")

MESSAGE = ("coze-discord-proxy is shutting down and could not finish this reply in time{where}. "
           "{retry}")


def shutdown_error(request_id: str | None, posted: bool) -> oe.OpenAIError:
    where = f" (request {request_id})" if request_id else ""
    retry = ("The prompt was already posted: not retried automatically, since a retry would post it again."
             if posted else "Nothing was posted: retry.")
    headers = {"x-should-retry": "false"} if posted else {"Retry-After": "1"}
    return oe.OpenAIError(503, MESSAGE.format(where=where, retry=retry), type="server_error",
                          code="shutting_down", headers=headers)


class ShutdownCutMiddleware:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = ended = sse_stream = False

        async def tracking_send(message) -> None:
            nonlocal started, ended, sse_stream
            if message["type"] == "http.response.start":
                started = True
                sse_stream = any(k.lower() == b"content-type" and v.startswith(b"text/event-stream")
                                 for k, v in message.get("headers", ()))
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                ended = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:
            if ended:
                raise
            state = scope.get("state") or {}
            err = shutdown_error(state.get("request_id"), oe.is_posted(SimpleNamespace(**state)))
            log.warning("request cut by the shutdown", extra={"request_id": state.get("request_id"),
                                                               "streaming": started})
            try:
                if not started:
                    await send_json(send, err.status, err.body(), err.headers)
                elif sse_stream:
                    await send({"type": "http.response.body", "body": sse(err.body()) + SSE_DONE})
                else:
                    raise
            except OSError:
                pass  # the client is gone too

