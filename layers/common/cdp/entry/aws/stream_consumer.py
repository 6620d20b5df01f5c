"""Consumer of the replies table's DynamoDB stream: side effects that must happen even when the
client has gone (the answering function is not there to do them).

For each reply part (kind=part) that Coze ended - its buttons, or a known Coze error text
(cdp.domain.completion.ended_by_coze) - it schedules the temporary channel's deletion in the
registry (never postponing one the API already scheduled) and emits metrics. Limit texts rest what
caused them (cdp.app.pool.rest_after_limit, until the next DAILY_RESET_TIME in TZ): the account that
posted the prompt (its fingerprint, from the PromptLedger the answering side wrote) or the Coze bot
(the ledger's, else the reply's author). Resting twice is harmless, so a record delivered twice is
too; a prompt missing from the ledger is logged and skipped.

Returns the sequence numbers of records that could not be processed (ReportBatchItemFailures).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cdp.domain.completion import ended_by_coze
from cdp.domain.coze import CozeErrorKind
from cdp.domain.model import ReplySnapshot
from cdp.domain.reply import render

log = logging.getLogger("cdp.entry.aws.stream")


@dataclass
class BatchResult:
    completed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    channels_scheduled: int = 0
    skipped: int = 0
    cooldowns: dict[str, int] = field(default_factory=dict)  # "account" / "bot" / "unknown" -> count
    failures: list[str] = field(default_factory=list)

    def response(self) -> dict[str, Any]:
        return {"batchItemFailures": [{"itemIdentifier": seq} for seq in self.failures]}


class _RaisingHealth:
    """HealthStore wrapper remembering a failed write: cdp.app.pool keeps such a write in its process
    (right for the API), while the consumer must fail the record so Lambda delivers it again."""

    def __init__(self, store) -> None:
        self._store = store
        self.failed: Exception | None = None

    async def load(self, kind: str):
        return await self._store.load(kind)

    async def claim(self, kind: str, key: str, previous_last_used: float, now: float) -> bool:
        return await self._store.claim(kind, key, previous_last_used, now)

    async def save_health(self, kind: str, record) -> None:
        try:
            await self._store.save_health(kind, record)
        except Exception as exc:
            self.failed = exc
            raise

    def check(self) -> None:
        exc, self.failed = self.failed, None
        if exc is not None:
            raise exc


class Cooldowns:
    """Rests the account (user limit) or the Coze bot (bot limit) that a limit text answered."""

    def __init__(self, ledger, health, *, tz: str, reset_time: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.ledger = ledger
        self.health = _RaisingHealth(health)
        self._kw = {"tz": tz, "reset_time": reset_time, "clock": clock}
        self._pool = self._bots = None

    def _health(self):
        if self._pool is None:  # cdp.app.pool only when a limit text shows up
            from cdp.app.pool import AccountPool, BotHealth

            self._pool = AccountPool([], self.health, **self._kw)  # no tokens: it rests by fingerprint
            self._bots = BotHealth(self.health, **self._kw)
        return self._pool, self._bots

    async def apply(self, kind: str, msg) -> str:
        """"account" / "bot" when one was rested, "unknown" when the prompt is not in the ledger,
        "" for other error kinds."""
        from cdp.app.pool import LIMIT_KINDS, rest_after_limit

        if kind not in LIMIT_KINDS:
            return ""
        entry = await self.ledger.lookup(msg.prompt_id) or {}
        pool, bots = self._health()
        rested = await rest_after_limit(kind, pool, bots, account=entry.get("account") or "",
                                        # the reply's author is the Coze bot
                                        coze_bot_id=entry.get("coze_bot_id") or msg.author_id or "")
        if rested == "unknown" and kind == CozeErrorKind.USER_LIMIT:
            log.warning("user limit text for a prompt missing from the ledger; no account rested",
                        extra={"prompt_message_id": msg.prompt_id, "channel_id": msg.channel_id})
        self.health.check()
        return rested


async def process_records(records: list[dict], channels, *, auto_delete_seconds: float,
                          clock: Callable[[], float] = time.time,
                          cooldowns: Cooldowns | None = None) -> BatchResult:
    from cdp.adapters.store.dynamodb import KIND_PART, reply_from_item

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
            ended = ended_by_coze(render(ReplySnapshot(msg.prompt_id, (msg,))))
            if ended is None:
                result.skipped += 1  # still streaming
                continue
            error = ended.error
            result.completed += 1
            if error is not None:
                kind = str(error.kind)
                result.errors[kind] = result.errors.get(kind, 0) + 1
                log.warning("Coze answered with an error text", extra={
                    "kind": kind, "prompt_message_id": msg.prompt_id, "channel_id": msg.channel_id})
                if cooldowns is not None:
                    rested = await cooldowns.apply(kind, msg)
                    if rested:
                        result.cooldowns[rested] = result.cooldowns.get(rested, 0) + 1
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
    names = {"account": "AccountCooldowns", "bot": "BotCooldowns", "unknown": "CooldownsWithoutPrompt"}
    for what, n in result.cooldowns.items():
        metrics.add_metric(name=names[what], unit=MetricUnit.Count, value=n)
    if result.failures:
        metrics.add_metric(name="StreamRecordFailures", unit=MetricUnit.Count, value=len(result.failures))


def replies_stream_handler():
    """Lambda handler for the replies table's stream (needs only the state table, no secret).

    Cooldowns run before the channel scheduling of the same record; a failure of either reports
    the record (ReportBatchItemFailures) and both are idempotent on the retry."""
    from cdp.entry.aws import observability as obs
    from cdp.entry.aws.runtime import run, state

    plog = obs.logger()
    metrics = obs.metrics()

    @plog.inject_lambda_context(clear_state=True)
    @metrics.log_metrics
    def handler(event: dict, context: Any) -> dict:
        built = state.get("stream_consumer")
        if built is None:
            from cdp.adapters.store.dynamodb import DynamoChannelRegistry
            from cdp.adapters.store.dynamodb.state import DynamoHealthStore, DynamoPromptLedger
            from cdp.settings import Settings

            # no Discord secrets here: CHANNEL_AUTO_DEL_TIME, TZ, DAILY_RESET_TIME, LOG_LEVEL
            s = Settings()
            obs.configure(s.LOG_LEVEL)
            cooldowns = Cooldowns(DynamoPromptLedger(s), DynamoHealthStore(s), tz=s.TZ,
                                  reset_time=s.DAILY_RESET_TIME)
            built = state["stream_consumer"] = (s, DynamoChannelRegistry(s), cooldowns)
        s, registry, cooldowns = built
        records = event.get("Records") or []
        result = run(process_records(records, registry, auto_delete_seconds=s.CHANNEL_AUTO_DEL_TIME,
                                     cooldowns=cooldowns))
        emit_metrics(metrics, result)
        plog.info("replies stream batch", extra={"records": len(records), "completed": result.completed,
                                                 "channels_scheduled": result.channels_scheduled,
                                                 "cooldowns": result.cooldowns,
                                                 "failures": len(result.failures)})
        return result.response()

    return handler
