"""The client's output limits: `max_tokens` / `max_completion_tokens` and `stop`.

Coze cannot be told either, so the proxy applies them to what it sends: the answer is cut at
`max_tokens` tokens (o200k_base, as counted for usage) with finish_reason "length", or before the
first occurrence of a stop string with finish_reason "stop", whichever comes first.

`OutputLimiter` works on the append-only deltas a stream sends (after `DeltaAssembler`): `feed`
returns what may be sent now, `finish` the rest at the end of the reply. While stop strings are set,
the last `len(longest stop) - 1` characters are held back, so a stop string split across two Coze
edits is still found before any of it is sent. Once a limit is reached (`done`), nothing more is
sent: the caller ends the answer there. `apply` cuts a whole text (non-streamed answers).

Guarantees (tested with random splits): what `feed` and `finish` return, joined, is a prefix of the
answer of at most `max_tokens` tokens that contains no stop string; with stop strings alone it is
exactly `apply(text)`'s text, with the same finish reason. (A token cut may differ by a partial
word: a stream cuts the text it has, which may end inside a word the full text continues.)

`LimitedStream` chains a `DeltaAssembler` (Coze edits → safe deltas) and an `OutputLimiter`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cdp.domain.stream import DeltaAssembler
from cdp.domain.tokens import count_tokens, max_tokens_bound, truncate_tokens

__all__ = ["LENGTH", "STOP", "LimitedStream", "OutputLimiter"]

LENGTH, STOP = "length", "stop"


class OutputLimiter:
    def __init__(self, max_tokens: int | None = None, stop: str | Sequence[str] = (),
                 truncate: Callable[[str, int], str] = truncate_tokens) -> None:
        self.max_tokens = max_tokens
        stop = [stop] if isinstance(stop, str) else stop
        self.stops = [s for s in dict.fromkeys(stop) if s]
        self._hold = max((len(s) for s in self.stops), default=1) - 1
        self._truncate = truncate
        self.sent = ""  # everything returned so far
        self._pending = ""  # received, not yet sent (the tail a stop string may still start in)
        self.finish_reason: str | None = None  # LENGTH or STOP once a limit was reached

    @property
    def active(self) -> bool:
        """Whether there is any limit at all (without one, the caller can skip the limiter)."""
        return self.max_tokens is not None or bool(self.stops)

    @property
    def done(self) -> bool:
        """A limit was reached: nothing more will be sent."""
        return self.finish_reason is not None

    def feed(self, delta: str) -> str:
        """The text that may be sent now, given the next delta of the answer."""
        if self.done or not delta:
            return ""
        self._pending += delta
        return self._release(final=False)

    def finish(self, rest: str = "") -> str:
        """The end of the answer: what is still to send (the held tail, and `rest`)."""
        if self.done:
            return ""
        self._pending += rest
        return self._release(final=True)

    def apply(self, text: str) -> tuple[str, str | None]:
        """A whole answer, cut: (text, LENGTH | STOP, or None when no limit was reached)."""
        self.feed(text)
        self.finish()
        return self.sent, self.finish_reason

    def _release(self, final: bool) -> str:
        pending = self._pending
        # The stop that is complete first as the text grows (smallest end; on a tie the longer one),
        # whatever the edits' boundaries: streamed and whole answers are cut at the same place.
        found = [(i + len(s), i) for s in self.stops if (i := pending.find(s)) != -1]
        cut = min(found)[1] if found else -1
        if cut != -1:
            out, self.finish_reason = pending[:cut], STOP
        elif final or not self._hold:
            out = pending
        else:  # a stop string may begin in the last len(longest) - 1 characters: keep them
            out = pending[:max(0, len(pending) - self._hold)]
        self._pending = pending[len(out):]
        if self.max_tokens is not None:
            out = self._within_tokens(out)
        self.sent += out
        return out

    def _within_tokens(self, out: str) -> str:
        candidate = self.sent + out
        if max_tokens_bound(candidate) <= self.max_tokens or count_tokens(candidate) <= self.max_tokens:
            return out
        kept = self._truncate(candidate, self.max_tokens)
        self.finish_reason = LENGTH
        self._pending = ""
        # Text already sent cannot be taken back: if the cut falls inside it, nothing more is sent.
        return kept[len(self.sent):] if len(kept) > len(self.sent) else ""


class LimitedStream:
    """Coze's successive texts → the deltas to send, within the limits (`limiter.done` ends the answer)."""

    def __init__(self, assembler: DeltaAssembler, limiter: OutputLimiter) -> None:
        self.assembler = assembler
        self.limiter = limiter

    @property
    def done(self) -> bool:
        return self.limiter.done

    @property
    def text(self) -> str:
        """Everything sent so far."""
        return self.limiter.sent

    def update(self, text: str) -> str:
        return self.limiter.feed(self.assembler.update(text))

    def finish(self, final_text: str) -> str:
        if self.limiter.done:
            return ""
        return self.limiter.finish(self.assembler.finish(final_text))
