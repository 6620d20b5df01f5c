"""Consumer of the replies table's DynamoDB stream: side effects that must happen even when the
client has gone (the answering function is not there to do them).

For each reply part (kind=part) that is complete - Coze added its buttons (has_components) or the
text is a known Coze error (cdp.domain.coze.classify) - it schedules the temporary channel's
deletion in the registry (never postponing one the API already scheduled) and emits metrics.
Account cooldown on limit texts: logged (with the kind) until an account store exists.

Returns the sequence numbers of records that could not be processed (ReportBatchItemFailures).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("cdp.aws.stream")


@dataclass
class BatchResult:
    completed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    channels_scheduled: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)

    def response(self) -> dict[str, Any]:
        return {"batchItemFailures": [{"itemIdentifier": seq} for seq in self.failures]}


def _classify(text: str):
    try:
        from cdp.domain.coze import classify
    except ImportError:  # pragma: no cover - older core
        return None
    return classify(text) if text else None


async def process_records(records: list[dict], channels, *, auto_delete_seconds: float,
                          clock: Callable[[], float] = time.time) -> BatchResult:
    from cdp.store.dynamodb import KIND_PART, reply_from_item

    result = BatchResult()
    handled: set[str] = set()  # channels already scheduled in this batch
    for record in records:
        ddb = record.get("dynamodb") or {}
        seq = str(ddb.get("SequenceNumber", ""))
        try:
            image = ddb.get("NewImage")
            if record.get("eventName") == "REMOVE" or not image or \
                    image.get("kind", {}).get("S") != KIND_PART:
                result.skipped += 1
                continue
            msg = reply_from_item(image)
            error = _classify(msg.content)
            if not (msg.has_components or error is not None):
                result.skipped += 1  # still streaming
                continue
            result.completed += 1
            if error is not None:
                kind = str(error.kind)
                result.errors[kind] = result.errors.get(kind, 0) + 1
                log.warning("Coze answered with an error text", extra={
                    "kind": kind, "prompt_message_id": msg.prompt_id, "channel_id": msg.channel_id})
            if auto_delete_seconds > 0 and msg.channel_id and msg.channel_id not in handled:
                handled.add(msg.channel_id)
                if await channels.schedule_delete_if_in_use(msg.channel_id, clock() + auto_delete_seconds):
                    result.channels_scheduled += 1
        except Exception:
            log.exception("could not process a replies stream record", extra={"sequence_number": seq})
            if seq:
                result.failures.append(seq)
    return result


def emit_metrics(metrics, result: BatchResult) -> None:
    from aws_lambda_powertools.metrics import MetricUnit

    metrics.add_metric(name="RepliesCompleted", unit=MetricUnit.Count, value=result.completed)
    metrics.add_metric(name="ChannelsScheduledForDeletion", unit=MetricUnit.Count,
                       value=result.channels_scheduled)
    for kind, n in result.errors.items():
        metrics.add_metric(name=f"CozeError_{kind}", unit=MetricUnit.Count, value=n)
    if result.failures:
        metrics.add_metric(name="StreamRecordFailures", unit=MetricUnit.Count, value=len(result.failures))


def replies_stream_handler():
    """Lambda handler for the replies table's stream (needs only the state table, no secret)."""
    from cdp.aws import observability as obs
    from cdp.aws.runtime import _state, run

    plog = obs.logger()
    metrics = obs.metrics()

    @plog.inject_lambda_context(clear_state=True)
    @metrics.log_metrics
    def handler(event: dict, context: Any) -> dict:
        built = _state.get("stream_consumer")
        if built is None:
            from cdp.settings import Settings
            from cdp.store.dynamodb import DynamoChannelRegistry

            s = Settings()  # no Discord secrets here: only CHANNEL_AUTO_DEL_TIME and LOG_LEVEL
            obs.configure(s.LOG_LEVEL)
            built = _state["stream_consumer"] = (s, DynamoChannelRegistry())
        s, registry = built
        records = event.get("Records") or []
        result = run(process_records(records, registry, auto_delete_seconds=s.CHANNEL_AUTO_DEL_TIME))
        emit_metrics(metrics, result)
        plog.info("replies stream batch", extra={"records": len(records), "completed": result.completed,
                                                 "channels_scheduled": result.channels_scheduled,
                                                 "failures": len(result.failures)})
        return result.response()

    return handler
