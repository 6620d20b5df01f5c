"""When to read a reply again: the polling rhythm of `DynamoReplyStore.wait_for_change`.

DynamoDB cannot push, so the answering side polls the prompt's partition (one strongly consistent
Query, 1 read unit while the reply is under 4 KB). Every item carries `updated_at`, the listener's
wall clock when it wrote it; successive values give Coze's edit pace (Discord lets a bot edit about
once a second, so real Coze edits are regular), and the last one its phase. So:

- before the first reply message (Coze "thinks" for seconds): every `think` s, which bounds the
  delay added to the first token to about think/2 plus one read;
- while the reply is being edited: sleep until the next edit is expected (last write + pace; at
  most `quiet` s at a time), then read every `fast` s until it is seen; once it is overdue by more than a pace (Coze paused, or the
  reply is over and the idle timeout is running) back off gradually to `slow`.

Clock skew between the listener and this process only shifts the phase: a write stamped in this
process's future is clamped to the time it was seen, one stamped in the past makes the reads start
early (costs reads, never latency). Pure: no I/O, the caller passes the times.
"""

from __future__ import annotations

from dataclasses import dataclass

THINK = 0.15  # before the first reply message (measured at 0.2: first token +151 ms p50, target 150)
THINK_LONG_AFTER = 30.0  # ... and after this long without one (Coze rarely thinks that long)
THINK_LONG = 0.5
FAST = 0.04  # around an expected edit
AFTER = 0.01  # first read this long after the expected write (the write itself takes a few ms)
PACE_UNKNOWN = 0.1  # until two writes were seen
PACE_MIN = 0.05
PACE_MAX = 5.0
QUIET = 0.5  # longest sleep while waiting for an expected edit (edits are not perfectly regular)
SLOW = 0.3  # ceiling of the back-off once an edit is overdue
BACKOFF_PER_SECOND = 0.25  # the interval grows by this much per second overdue


@dataclass(slots=True)
class Rhythm:
    """Polling state of one prompt (times are this process's epoch seconds)."""

    since: float  # when the first wait began
    last_write: float | None = None  # newest write seen (clamped to when it was seen)
    pace: float | None = None  # moving average of the gaps between writes

    def observe(self, newest_write: float | None, seen_at: float) -> None:
        """A read at `seen_at` found `newest_write` as the newest item's updated_at (None: no item)."""
        if newest_write is None:
            return
        write = min(newest_write, seen_at)
        if self.last_write is not None:
            if write <= self.last_write:
                return
            gap = min(PACE_MAX, max(PACE_MIN, write - self.last_write))
            self.pace = gap if self.pace is None else 0.5 * self.pace + 0.5 * gap
        self.last_write = write

    def delay(self, now: float) -> float:
        """Seconds to sleep before the next read, after a read at `now` that found nothing new."""
        if self.last_write is None:
            return THINK if now - self.since < THINK_LONG_AFTER else THINK_LONG
        pace = self.pace or PACE_UNKNOWN
        expected = self.last_write + pace + AFTER
        if now < expected - FAST:
            return min(QUIET, expected - now)
        overdue = now - expected
        if overdue < max(pace, SLOW):
            return FAST
        return min(SLOW, FAST + BACKOFF_PER_SECOND * (overdue - max(pace, SLOW)))
