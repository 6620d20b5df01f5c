"""Lambda runtimes: what functions/*/app.py build. Objects are built once per execution environment
(on the first invocation, when the secret is readable) and reused while the environment lives.

- `api_handler()`        API Gateway REST event -> FastAPI (Mangum, buffered routes)
- `stream_app()`         the same FastAPI app as a plain ASGI app, served by uvicorn behind the
                         Lambda Web Adapter (response streaming for chat and image routes)
- `job_handler(job)`     EventBridge Scheduler event -> an async job over (settings, objects)
- `run(coro)`            one event loop per process, reused across invocations (like Mangum's), so
                         httpx connection pools survive between invocations
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from cdp.entry.asgi import send_json
from cdp.entry.aws import observability as obs

if TYPE_CHECKING:
    from cdp.app.conversation import ConversationService
    from cdp.ports import DiscordRestPort, Stores
    from cdp.settings import Settings

log = logging.getLogger("cdp.entry.aws")

state: dict[str, Any] = {}  # objects built once per execution environment, by name


def reset() -> None:
    """Forget every object built in this process (tests; a new secret)."""
    state.clear()


def event_loop() -> asyncio.AbstractEventLoop:
    loop = state.get("loop")
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        state["loop"] = loop
    return loop


def run(coro: Awaitable[Any]) -> Any:
    return event_loop().run_until_complete(coro)


def settings(*, require_discord: bool = True) -> Settings:
    """Settings from the environment + the Secrets Manager secret, once per process; logging set up."""
    cached = state.get("settings")
    if cached is not None:
        return cached
    from cdp.entry.aws.secrets import load_aws_settings

    s = load_aws_settings()
    if require_discord and s.demo:
        from cdp.settings import SettingsError

        raise SettingsError([("no Discord settings: put USER_AUTHORIZATION and BOT_TOKEN in the CDP secret "
                              "and set GuildId / CozeBotId (see docs/aws.md)")])
    obs.configure(s.LOG_LEVEL, s.secrets())
    state["settings"] = s
    return s


def objects() -> tuple[Settings, Stores, DiscordRestPort, ConversationService]:
    """(settings, stores, rest, service), built once per process."""
    built = state.get("objects")
    if built is None:
        from cdp.entry.bootstrap import make_rest, make_service, make_stores

        s = settings()
        stores = make_stores(s)
        rest = make_rest(s)
        built = state["objects"] = (s, stores, rest, make_service(s, stores, rest))
    return built


def build_app(s: Settings | None = None):
    from cdp.entry.api.app import create_app
    from cdp.entry.api.runtime import ExternalListener, Runtime
    from cdp.entry.aws.presence import PresenceGateway

    s2, stores, _, service = objects() if s is None else (s, None, None, None)
    if not s2.api_keys and not s2.ALLOW_OPEN_API:  # API Gateway is public: no key = anyone's proxy
        from cdp.settings import SettingsError

        raise SettingsError(["PROXY_SECRET is empty: put API keys in the CDP secret (or set ALLOW_OPEN_API=1 "
                             "to serve an open API on purpose)"])
    if service is None:
        from cdp.entry.bootstrap import make_service, make_stores

        stores = make_stores(s)
        service = make_service(s, stores)
    # The listener is the ECS task: its health is what it publishes in the presence store.
    from cdp.adapters.metrics_emf import EmfMetrics  # the /metrics names as EMF, flushed per invocation

    presence = getattr(stores, "presence", None) if stores is not None else None
    gateway = PresenceGateway(presence) if presence is not None else ExternalListener()
    return create_app(Runtime(s2, service, gateway, stores=stores, metrics=EmfMetrics()))


def config_error_body(exc: Exception) -> dict[str, Any]:
    """The OpenAI-shaped 503 body of a function whose configuration failed (no secret, bad setting)."""
    problems = [str(p) for p in (getattr(exc, "problems", None) or [type(exc).__name__])]
    return {"error": {"message": "coze-discord-proxy is not configured: " + "; ".join(problems),
                      "type": "server_error", "param": None, "code": "not_configured"}}


def _config_error_response(exc: Exception) -> dict[str, Any]:
    body = config_error_body(exc)
    return {"statusCode": 503, "headers": {"Content-Type": "application/json", "Retry-After": "60"},
            "multiValueHeaders": {}, "body": json.dumps(body), "isBase64Encoded": False}


def api_handler() -> Callable[[dict, Any], dict]:
    """API Gateway (REST, proxy integration) event -> FastAPI via Mangum."""
    plog = obs.logger()

    @plog.inject_lambda_context(clear_state=True)
    def handler(event: dict, context: Any) -> dict:
        mangum = state.get("mangum")
        if mangum is None:
            from mangum import Mangum

            try:
                app = build_app()
            except Exception as exc:  # noqa: BLE001 - SettingsError, unreadable secret: answer, do not crash-loop
                plog.error("configuration error", extra={"error": str(getattr(exc, "problems", exc))})
                return _config_error_response(exc)
            event_loop()  # Mangum runs on the thread's current loop: make it ours
            mangum = state["mangum"] = Mangum(app, lifespan="off")
        return mangum(event, context)

    return handler


class LazyStreamApp:
    """ASGI app for uvicorn behind the Lambda Web Adapter (functions/stream/run.sh), built on the first
    request as the API function's is: a configuration failure (unreadable secret, no PROXY_SECRET)
    answers an OpenAI-shaped 503 and is retried on the next request, instead of uvicorn failing at import
    (which the Web Adapter and API Gateway turn into a bare 502). The Web Adapter's readiness check
    (GET /) is answered without building. Lifespan events are acknowledged here (the app needs none)."""

    def __init__(self, build: Callable[[], Any] | None = None) -> None:
        self.build = build or (lambda: build_app(settings()))
        self.app: Any = None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if self.app is None:
            if scope["type"] == "http" and scope.get("path") == "/" and scope.get("method") == "GET":
                return await send_json(send, 200, {"name": "coze-discord-proxy", "openai_base_url": "/v1",
                                                    "health": "/healthz"})
            try:
                self.app = self.build()
            except Exception as exc:  # noqa: BLE001 - answer, do not crash-loop
                log.error("%s", config_error_body(exc)["error"]["message"])
                if scope["type"] == "http":
                    return await send_json(send, 503, config_error_body(exc), {"retry-after": "60"})
                return None
        return await self.app(scope, receive, send)


def stream_app() -> LazyStreamApp:
    """ASGI app for uvicorn behind the Lambda Web Adapter (functions/stream/run.sh), built lazily."""
    return LazyStreamApp()


def job_handler(job: Callable[..., Awaitable[dict]], *, name: str) -> Callable[[dict, Any], dict]:
    """EventBridge Scheduler event -> `await job(settings, stores, rest, service)`; metrics flushed."""
    plog = obs.logger()
    metrics = obs.metrics()

    @plog.inject_lambda_context(clear_state=True)
    @metrics.log_metrics
    def handler(event: dict, context: Any) -> dict:
        from aws_lambda_powertools.metrics import MetricUnit

        result = run(job(*objects()))
        for key, value in result.items():
            if isinstance(value, int) and not isinstance(value, bool):
                metrics.add_metric(name=f"{name}_{key}", unit=MetricUnit.Count, value=value)
        plog.info(f"{name} done", extra={"result": result})
        return result

    return handler
