"""The metric catalogue: one set of names for both topologies (Prometheus text at /metrics in
`cdp serve`, CloudWatch EMF on Lambda). Pure data: the adapters (cdp.adapters.metrics_*) build their
instruments from it; use cases and adapters call the Metrics port (cdp.ports) with these names."""

from __future__ import annotations

from dataclasses import dataclass

COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
SECONDS, COUNT = "Seconds", "Count"  # EMF units (CloudWatch's names)

# Discord's cap on channels per server: the temporary channels count against it
DISCORD_CHANNEL_LIMIT = 500


@dataclass(frozen=True)
class MetricDef:
    name: str
    kind: str
    help: str
    labels: tuple[str, ...] = ()
    unit: str = COUNT
    buckets: tuple[float, ...] = ()


REQUESTS = "cdp_requests_total"
TTFT = "cdp_time_to_first_token_seconds"
DURATION = "cdp_request_duration_seconds"
EDIT_LATENCY = "cdp_edit_latency_seconds"
ACTIVE_STREAMS = "cdp_active_streams"
COZE_ERRORS = "cdp_coze_errors_total"
DISCORD_429 = "cdp_discord_rate_limited_total"
GATEWAY_STATE = "cdp_gateway_state"
GATEWAY_RESUMES = "cdp_gateway_resumes"
ACCOUNTS = "cdp_accounts"
BOTS_RESTING = "cdp_bots_resting"
TEMP_CHANNELS = "cdp_temp_channels"
TEMP_CHANNEL_LIMIT = "cdp_temp_channels_limit"
LISTENER_WRITES = "cdp_listener_store_writes_total"
LISTENER_STORE_HEALTHY = "cdp_listener_store_healthy"

CATALOGUE: dict[str, MetricDef] = {d.name: d for d in (
    MetricDef(REQUESTS, COUNTER, "API requests answered, by route template, HTTP status and model",
              ("route", "status", "model")),
    MetricDef(TTFT, HISTOGRAM, "seconds from the request to the first reply text from Coze", ("model",),
              SECONDS, (0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60)),
    MetricDef(DURATION, HISTOGRAM, "seconds from the request to the end of its response (streams included)",
              ("route", "model"), SECONDS, (0.05, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 840)),
    MetricDef(EDIT_LATENCY, HISTOGRAM, "seconds from a Coze edit's Discord timestamp to the proxy seeing it",
              (), SECONDS, (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)),
    MetricDef(ACTIVE_STREAMS, GAUGE, "SSE responses being streamed now"),
    MetricDef(COZE_ERRORS, COUNTER, "replies that were a Coze error text, by kind", ("kind",)),
    MetricDef(DISCORD_429, COUNTER, "429 answers from Discord's REST API, by route template", ("route",)),
    MetricDef(GATEWAY_STATE, GAUGE, "1 for the gateway listener's current state, 0 for the others", ("state",)),
    MetricDef(GATEWAY_RESUMES, GAUGE, "gateway sessions resumed since the listener started"),
    MetricDef(ACCOUNTS, GAUGE, "Discord user accounts by state", ("state",)),
    MetricDef(BOTS_RESTING, GAUGE, "Coze bots resting (daily limit) or dead"),
    MetricDef(TEMP_CHANNELS, GAUGE, "temporary cdp-chat-* channels registered, by state", ("state",)),
    MetricDef(TEMP_CHANNEL_LIMIT, GAUGE, "Discord's channel limit per server the temporary channels count against"),
    MetricDef(LISTENER_WRITES, COUNTER, "the gateway listener's writes of Coze reply versions to the reply store, "
              "by outcome: written, superseded (a newer version came first), failed (an attempt, retried)",
              ("outcome",)),
    MetricDef(LISTENER_STORE_HEALTHY, GAUGE, "1 while the gateway listener's store writes succeed, 0 after "
              "5 failures in a row (its /healthz then answers 503)"),
)}

ACCOUNT_STATES = ("healthy", "resting", "dead")
GATEWAY_STATES = ("starting", "connecting", "ready", "resuming", "failed", "stopped", "external")


def gateway_gauges(gateway: dict) -> list[tuple[str, float, dict[str, str]]]:
    """The gauges of a GatewayStatus.to_dict() (the listener in `cdp serve`, or `cdp listener` on ECS)."""
    out: list[tuple[str, float, dict[str, str]]] = []
    state = str(gateway.get("state") or "unknown")
    for s in (*GATEWAY_STATES, *(() if state in GATEWAY_STATES else (state,))):
        out.append((GATEWAY_STATE, 1.0 if s == state else 0.0, {"state": s}))
    if "resumes" in gateway:
        out.append((GATEWAY_RESUMES, float(gateway.get("resumes") or 0), {}))
    store = gateway.get("store")
    if isinstance(store, dict) and "healthy" in store:
        out.append((LISTENER_STORE_HEALTHY, 1.0 if store["healthy"] else 0.0, {}))
    return out


def status_gauges(status: dict) -> list[tuple[str, float, dict[str, str]]]:
    """The gauges of a /api/status body (cdp.entry.api.ops.collect_status): (name, value, labels)."""
    out = gateway_gauges(status.get("gateway") or {})
    by_health = status.get("accounts_by_health") or {}
    for s in (*ACCOUNT_STATES, *(k for k in by_health if k not in ACCOUNT_STATES)):
        out.append((ACCOUNTS, float(by_health.get(s, 0)), {"state": s}))
    bots = status.get("bots_by_health") or {}
    out.append((BOTS_RESTING, float(sum(v for k, v in bots.items() if k in ("resting", "dead"))), {}))
    channels = (status.get("temporary_channels") or {})
    total = int(channels.get("count") or 0)
    in_use = int(channels.get("in_use", total) or 0)
    out.append((TEMP_CHANNELS, float(in_use), {"state": "in_use"}))
    out.append((TEMP_CHANNELS, float(total - in_use), {"state": "pending_delete"}))
    out.append((TEMP_CHANNEL_LIMIT, float(DISCORD_CHANNEL_LIMIT), {}))
    return out
