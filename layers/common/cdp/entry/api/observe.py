"""Request observation at the edge: the metrics of every API request (route template, status, model,
duration, TTFT, active streams) and a bounded record of recent requests for the status page.

`install(app, runtime)` gives the runtime its Metrics (Prometheus, unless the entry point chose
another: EMF on Lambda), hands it to the conversation service and the Discord REST client, and adds
the ASGI middleware. The record is per process: behind API Gateway each Lambda environment keeps its
own (the status page then shows that environment's requests)."""

from __future__ import annotations

import collections
import json
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from cdp.domain.metrics import ACTIVE_STREAMS, DURATION, REQUESTS, TTFT

MAX_RECENT = 200  # recent requests kept for the status page
HISTORY_MINUTES = 60  # the status page's chart: one point per minute
MAX_MODELS = 50  # distinct model label values; more are reported as "other" (the model is client input)
MAX_LABEL_CHARS = 80
NOT_OBSERVED = ("/metrics", "/status", "/favicon.ico")  # scrapes and the page itself
LOGGED_PREFIXES = ("/v1/", "/api/")  # the recent requests: the APIs' requests ...
NOT_LOGGED = ("/api/status",)  # ... but not the status page's own polling


@dataclass
class RecentRequest:
    id: str
    at: float  # epoch seconds the request arrived
    method: str
    route: str
    model: str | None
    status: int
    ttft: float | None
    duration: float
    error: str | None  # the OpenAI error code, a Coze error kind, "timeout", or None
    stream: bool
    account: str | None  # fingerprint of the user account that posted the prompt


class RequestLog:
    """The last MAX_RECENT requests, per-minute totals for the last hour, requests today per account."""

    def __init__(self, clock=time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self.recent: collections.deque[RecentRequest] = collections.deque(maxlen=MAX_RECENT)
        self._minutes: dict[int, list[float]] = {}  # minute -> [requests, errors, ttft sum, ttft n, ttft max]
        self._today: tuple[str, dict[str, int]] = ("", {})
        self._models: set[str] = set()

    def model_label(self, model: str | None) -> str:
        if not model:
            return "-"
        model = model[:MAX_LABEL_CHARS]
        with self._lock:
            if model in self._models:
                return model
            if len(self._models) >= MAX_MODELS:
                return "other"
            self._models.add(model)
            return model

    def add(self, r: RecentRequest) -> None:
        with self._lock:
            self.recent.append(r)
            minute = int(r.at // 60)
            m = self._minutes.setdefault(minute, [0, 0, 0.0, 0, 0.0])
            m[0] += 1
            m[1] += 1 if (r.error or r.status >= 400) else 0
            if r.ttft is not None and not r.error:
                m[2] += r.ttft
                m[3] += 1
                m[4] = max(m[4], r.ttft)
            for old in [k for k in self._minutes if k <= minute - HISTORY_MINUTES]:
                del self._minutes[old]
            if r.account:
                day = time.strftime("%Y-%m-%d", time.gmtime(r.at))
                if self._today[0] != day:
                    self._today = (day, {})
                counts = self._today[1]
                counts[r.account] = counts.get(r.account, 0) + 1

    def requests_today(self) -> dict[str, int]:
        """Requests per account fingerprint since 00:00 UTC (this process)."""
        with self._lock:
            day = time.strftime("%Y-%m-%d", time.gmtime(self.clock()))
            return dict(self._today[1]) if self._today[0] == day else {}

    def history(self) -> list[dict[str, Any]]:
        """One point per minute of the last hour (oldest first), minutes without requests included."""
        now_minute = int(self.clock() // 60)
        with self._lock:
            out = []
            for minute in range(now_minute - HISTORY_MINUTES + 1, now_minute + 1):
                n, errors, tsum, tn, tmax = self._minutes.get(minute, [0, 0, 0.0, 0, 0.0])
                out.append({"minute": minute * 60, "requests": int(n), "errors": int(errors),
                            "ttft_avg": (tsum / tn) if tn else None, "ttft_max": tmax if tn else None})
            return out

    def recent_list(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest first."""
        with self._lock:
            items = list(self.recent)[-limit:]
        return [asdict(r) for r in reversed(items)]


class ObserveMiddleware:
    """Pure ASGI: one observation per HTTP request, when its response has been sent (streams too)."""

    def __init__(self, app, runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("path", "").startswith(NOT_OBSERVED):
            await self.app(scope, receive, send)
            return
        started_wall, started = time.time(), time.monotonic()
        metrics = self.runtime.metrics
        facts: dict[str, Any] = {"status": 500, "stream": False, "error_body": b""}

        async def observed_send(message) -> None:
            if message["type"] == "http.response.start":
                facts["status"] = message["status"]
                ctype = dict(message.get("headers") or ()).get(b"content-type", b"")
                if ctype.startswith(b"text/event-stream"):
                    facts["stream"] = True
                    metrics.inc(ACTIVE_STREAMS)
            elif message["type"] == "http.response.body" and facts["status"] >= 400:
                if len(facts["error_body"]) < 4096:
                    facts["error_body"] += message.get("body", b"")[:4096]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            if facts["stream"]:
                metrics.inc(ACTIVE_STREAMS, -1)
            try:
                self._record(scope, facts, started_wall, time.monotonic() - started)
            finally:
                flush = getattr(metrics, "flush", None)
                if flush is not None:
                    flush()  # EMF: once per invocation; Prometheus: nothing

    def _record(self, scope, facts: dict[str, Any], started_wall: float, duration: float) -> None:
        state = scope.get("state") or {}
        route_obj = scope.get("route")
        route = getattr(route_obj, "path", None) or "unmatched"
        conv = state.get("conversation")
        trace = getattr(conv, "trace", None)
        model = self.runtime.request_log.model_label(state.get("model"))
        status = int(facts["status"])
        ttft = trace.ttft if trace is not None else None
        error = trace.error_kind if trace is not None else None
        if error is None and status >= 400:
            error = _error_code(facts["error_body"]) or str(status)
        metrics = self.runtime.metrics
        metrics.inc(REQUESTS, route=route, status=str(status), model=model)
        metrics.observe(DURATION, duration, route=route, model=model)
        if ttft is not None and error is None:  # an error text is no first token
            metrics.observe(TTFT, ttft, model=model)
        if route.startswith(LOGGED_PREFIXES) and route not in NOT_LOGGED:
            self.runtime.request_log.add(RecentRequest(
                id=str(state.get("request_id") or ""), at=started_wall, method=scope.get("method", ""),
                route=route, model=state.get("model"), status=status, ttft=ttft, duration=duration,
                error=error, stream=facts["stream"], account=getattr(conv, "account", None) or None))


def _error_code(body: bytes) -> str | None:
    try:
        err = json.loads(body).get("error")
        return str(err.get("code") or err.get("type")) if isinstance(err, dict) else None
    except Exception:
        return None


def install(app, runtime) -> None:
    """Metrics for the runtime (Prometheus unless set), handed to the service and its Discord client;
    the request log; the middleware. Called once by create_app."""
    if runtime.metrics is None:
        from cdp.adapters.metrics_prometheus import PrometheusMetrics

        runtime.metrics = PrometheusMetrics()
    if not runtime.started_at:  # the status's uptime (nothing set it before)
        runtime.started_at = time.time()
    if runtime.request_log is None:
        runtime.request_log = RequestLog()
    service = runtime.service
    service.metrics = runtime.metrics
    if hasattr(service.rest, "metrics"):
        service.rest.metrics = runtime.metrics
    app.add_middleware(ObserveMiddleware, runtime=runtime)
