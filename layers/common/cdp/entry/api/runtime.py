"""What the API needs at run time, built by the entry point (cli, Lambda handler)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from cdp.app.conversation import ConversationService
from cdp.ports import Stores
from cdp.settings import Settings


class GatewayHealth(Protocol):
    @property
    def ready(self) -> bool: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass
class ExternalListener:
    """Health stand-in when the listener runs elsewhere (ECS, or `cdp listener`)."""

    ready: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"state": "external", "detail": "the gateway listener runs as a separate process"}


@dataclass
class Runtime:
    settings: Settings
    service: ConversationService
    gateway: GatewayHealth = field(default_factory=ExternalListener)
    demo_notice: str | None = None  # set in demo mode; shown at start-up and in /healthz
    started_at: float = 0.0
    stores: Stores | None = None  # for the jobs that `/cdp cleanup` and `/cdp keepalive` run
    metrics: Any = None  # the Metrics port's adapter (cdp.entry.api.observe.install: Prometheus if unset)
    request_log: Any = None  # recent requests for the status page (cdp.entry.api.observe.RequestLog)
