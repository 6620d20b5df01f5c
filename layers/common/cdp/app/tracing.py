"""What one conversation tells the operator: time to the first text, added latency per edit, and how
it ended (a Coze error kind, or a timeout). `Conversation.updates()` calls `seen` once per
observation; the edge reads the trace when the request ends (recent requests, TTFT histogram)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from cdp.domain.completion import Decision
from cdp.domain.metrics import COZE_ERRORS, EDIT_LATENCY
from cdp.domain.model import ReplySnapshot
from cdp.domain.reply import ReplyView
from cdp.ports import Metrics


@dataclass
class RequestTrace:
    started: float = field(default_factory=time.monotonic)
    first_text_at: float | None = None  # time.monotonic() of the first non-empty reply text
    error_kind: str | None = None  # a Coze error kind, or "timeout"
    edits: int = 0

    @property
    def ttft(self) -> float | None:
        return None if self.first_text_at is None else self.first_text_at - self.started

    def seen(self, view: ReplyView, decision: Decision, changed: bool, snapshot: ReplySnapshot,
             metrics: Metrics) -> None:
        """One observation of the reply (never raises)."""
        try:
            if changed and snapshot.messages:
                self.edits += 1
                # version = microseconds of the edit's Discord timestamp (cdp.domain.model.ReplyMessage)
                lag = time.time() - max(m.version for m in snapshot.messages) / 1e6
                metrics.observe(EDIT_LATENCY, max(lag, 0.0))
            if self.first_text_at is None and view.text:
                self.first_text_at = time.monotonic()
            if decision.done and self.error_kind is None:
                if decision.error is not None:
                    self.error_kind = str(decision.error.kind)
                    metrics.inc(COZE_ERRORS, kind=self.error_kind)
                elif decision.timeout_without_text:
                    self.error_kind = "timeout"
        except Exception:  # observing never fails the answer
            pass
