"""Gateway health of a listener that runs elsewhere (the ECS task), read from its published presence.

On AWS the API and stream functions do not hold the gateway session; the listener publishes
{ready, since} every few seconds (cdp.ports.ListenerPresence). /healthz and /api/status call
`refresh()` before reading `ready`, so they say what the presence store says instead of "ready" always.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from cdp.ports import ListenerPresence

log = logging.getLogger("cdp.entry.aws")


class PresenceGateway:
    """GatewayHealth (cdp.entry.api.runtime) backed by a ListenerPresence: ready while a listener
    has published a connected state recently."""

    def __init__(self, presence: ListenerPresence) -> None:
        self.presence = presence
        self.since: float | None = None
        self.error: str | None = None
        self.checked_at: float | None = None

    @property
    def ready(self) -> bool:
        return self.since is not None

    async def refresh(self) -> None:
        try:
            self.since = await self.presence.stable_since()
            self.error = None
        except Exception as exc:  # the store unreachable: not ready, and say why (no secret in a type name)
            log.warning("listener presence unreadable", extra={"error": type(exc).__name__})
            self.since, self.error = None, type(exc).__name__
        self.checked_at = time.time()

    def to_dict(self) -> dict[str, Any]:
        if self.error:
            detail = f"the listener's presence could not be read ({self.error})"
        elif self.since is None:
            detail = "no gateway listener has published a connected state recently (is the ECS service running?)"
        else:
            detail = "the gateway listener (ECS task) is connected"
        return {"state": "ready" if self.ready else "unavailable", "ready": self.ready, "detail": detail,
                "since": self.since, "source": "presence", "checked_at": self.checked_at}
