"""REQUEST_RATE_LIMIT: requests per minute per client IP, answered with an OpenAI-shaped 429.

A fixed one-minute window per client IP, counted in the RateLimitStore (memory for `cdp serve`;
DynamoDB when several Lambdas share the load, so the limit holds across instances). Retry-After
says when the current window ends. 0 turns the limit off. /healthz, /, the docs and /files are
never limited (health checks and image downloads are not API calls).

Client IP: the TCP peer (`request.client`; on Lambda, Mangum sets it from API Gateway's sourceIp).
With TRUST_PROXY_HEADERS (default: on in Lambda, off elsewhere) the right-most X-Forwarded-For hop
is used instead: that is the address the trusted proxy itself saw. The left-most hop is whatever the
client wrote in its own X-Forwarded-For header (proxies append to it), so trusting it would let
anyone dodge the limit by sending a different value each time.

Installed as the innermost middleware so a 429 still carries CORS headers and x-request-id.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from cdp.entry.openai import errors as oe
from cdp.ports import RateLimitStore
from cdp.settings import Settings

log = logging.getLogger("cdp.entry.api.limits")

WINDOW_SECONDS = 60
LIMITED_PREFIXES = ("/v1/", "/api/")


def client_ip(scope: Scope, trust_proxy_headers: bool) -> str:
    if trust_proxy_headers:
        for name, value in scope.get("headers") or ():
            if name == b"x-forwarded-for":
                hops = [h.strip() for h in value.decode("latin-1").split(",") if h.strip()]
                if hops:
                    return hops[-1]
    client = scope.get("client")
    return client[0] if client else "unknown"


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, *, limit: int, store: RateLimitStore, trust_proxy_headers: bool,
                 clock: Callable[[], float] = time.time) -> None:
        self.app = app
        self.limit = limit
        self.store = store
        self.trust = trust_proxy_headers
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or self.limit <= 0 or scope.get("method") == "OPTIONS"
                or not scope.get("path", "").startswith(LIMITED_PREFIXES)):
            await self.app(scope, receive, send)
            return
        now = self.clock()
        window = int(now // WINDOW_SECONDS)
        ip = client_ip(scope, self.trust)
        try:
            count = await self.store.hit(f"ip#{ip}", window, ttl=WINDOW_SECONDS * 2)
        except Exception:  # the limit is a protection, not a dependency: fail open
            log.warning("rate-limit store unavailable; request allowed", exc_info=True)
            count = 0
        if count > self.limit:
            retry = max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))
            log.info("rate limited", extra={"client_ip": ip, "count": count, "limit": self.limit})
            err = oe.rate_limited(retry)
            await JSONResponse(err.body(), status_code=err.status, headers=err.headers)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def install(app: FastAPI, settings: Settings, store: RateLimitStore | None) -> None:
    """Add the limiter as the innermost middleware (inside CORS and request ids)."""
    if store is None or settings.REQUEST_RATE_LIMIT <= 0:
        return
    app.user_middleware.append(Middleware(RateLimitMiddleware, limit=settings.REQUEST_RATE_LIMIT,
                                          store=store, trust_proxy_headers=settings.trust_proxy_headers))
