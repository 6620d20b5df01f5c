"""The status gauges on AWS (accounts by state, bots resting, temporary channels against the limit,
the listener's state as the API sees it): nobody scrapes a Lambda, so the cleanup function, which runs
every minute, writes them as EMF after its work, under the names of /metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cdp.app.jobs import cleanup

if TYPE_CHECKING:
    from cdp.app.conversation import ConversationService
    from cdp.ports import DiscordRestPort, Stores
    from cdp.settings import Settings


async def cleanup_and_gauges(settings: Settings, stores: Stores, rest: DiscordRestPort,
                             service: ConversationService) -> dict:
    """`cdp.app.jobs.cleanup`, then the status gauges as EMF (never failing the cleanup)."""
    result = await cleanup(settings, stores, rest, service)
    await publish_gauges(settings, stores, service)
    return result


async def publish_gauges(settings: Settings, stores: Stores, service: ConversationService) -> None:
    import logging

    from cdp.adapters.metrics_emf import EmfMetrics
    from cdp.entry.api.ops import collect_status, publish_status_gauges
    from cdp.entry.api.runtime import ExternalListener, Runtime

    try:
        runtime = Runtime(settings, service, ExternalListener(), stores=stores, metrics=EmfMetrics())
        publish_status_gauges(runtime, await collect_status(runtime))
        runtime.metrics.flush()
    except Exception:  # metrics never fail the job
        logging.getLogger("cdp.entry.aws").warning("status gauges not written", exc_info=True)
