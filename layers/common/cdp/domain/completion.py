"""When is a Coze reply complete? Layered rules over a ReplyView and the clock (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

from cdp.domain.coze import CozeError
from cdp.domain.reply import ReplyView

__all__ = ["Decision", "decide", "ended_by_coze", "next_wakeup"]


@dataclass(frozen=True)
class Decision:
    done: bool
    finish_reason: str | None = None  # "stop" | "length" (None while waiting, on error, on empty timeout)
    error: CozeError | None = None  # the reply is a Coze error text
    timeout_without_text: bool = False  # deadline passed and Coze said nothing usable
    reason: str = ""  # "buttons" | "error_text" | "idle" | "deadline" ("" while waiting)


_WAIT = Decision(done=False)


def _idle_enabled(idle_timeout: float | None) -> bool:
    return idle_timeout is not None and idle_timeout > 0


def ended_by_coze(view: ReplyView) -> Decision | None:
    """Rules (1) and (2) of `decide`: Coze itself ended the reply (an error text, or its buttons);
    None otherwise. The replies-stream consumer applies these alone (it has no clock)."""
    if view.error is not None:
        return Decision(done=True, error=view.error, reason="error_text")
    if view.done_by_buttons:
        return Decision(done=True, finish_reason="stop", reason="buttons")
    return None


def decide(
    view: ReplyView,
    *,
    now: float,
    last_change_at: float | None,
    idle_timeout: float,
    deadline: float,
) -> Decision:
    """Precedence: (1) Coze error text -> done with error; (2) suggestion buttons -> done "stop";
    (3) text and no change for `idle_timeout` s -> done "stop" (idle); (4) `now >= deadline` ->
    done "length" with text, else timeout_without_text; (5) keep waiting.

    `now`, `last_change_at` (when the reply last changed, None = never seen) and `deadline` are on
    the same monotonic clock, in seconds. `idle_timeout <= 0` disables rule (3) (the original's
    behaviour: buttons or timeout only).
    """
    ended = ended_by_coze(view)
    if ended is not None:
        return ended
    if (
        view.has_text
        and last_change_at is not None
        and _idle_enabled(idle_timeout)
        and now - last_change_at >= idle_timeout
    ):
        return Decision(done=True, finish_reason="stop", reason="idle")
    if now >= deadline:
        if view.has_text:
            return Decision(done=True, finish_reason="length", reason="deadline")
        return Decision(done=True, timeout_without_text=True, reason="deadline")
    return _WAIT


def next_wakeup(
    view: ReplyView,
    *,
    now: float,
    last_change_at: float | None,
    idle_timeout: float,
    deadline: float,
) -> float:
    """Seconds (>= 0) until decide() could change by the passage of time alone: the earlier of
    idle expiry (only when idle can apply) and the deadline; 0 if already done."""
    if decide(
        view, now=now, last_change_at=last_change_at, idle_timeout=idle_timeout, deadline=deadline
    ).done:
        return 0.0
    wait = deadline - now
    if view.has_text and last_change_at is not None and _idle_enabled(idle_timeout):
        wait = min(wait, last_change_at + idle_timeout - now)
    return max(0.0, float(wait))
