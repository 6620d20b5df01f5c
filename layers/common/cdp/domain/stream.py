"""Streaming: successive full-text snapshots (Coze edits) -> append-only deltas.

Coze streams by editing its reply; each edit carries the whole text so far. Most edits purely
extend the previous one, but some rewrite it (markdown being formed, a word fixed, a sentence
rephrased). Sent SSE deltas cannot be taken back, so a reply is streamed in one of two modes:

Optimistic (from the start): an edit that extends the previous snapshot is trusted at once and
everything is emitted except a minimal tail, which a pure extension could still change:
  - an unfinished last character cluster (one ending in a ZWJ, half a flag or surrogate pair, a
    virama, a Hangul leading consonant: prompt.cluster_may_continue). A complete cluster is sent
    even though an optional mark or skin tone may still follow: sent apart, the two pieces still
    concatenate to the final text, and holding every last character would delay every edit's
    text until the next edit (~1 s with real Coze),
  - trailing whitespace (sent at the start of the next delta: Discord trims it, render() inserts
    before the appended images),
  - a markdown link/image still being written ("[..](" without ")", "![.." without "]"), and
    the images at the very end (render() appends them after content that may still grow),
  - everything while the whole text could still become a known Coze error text,
  - `holdback` more characters (0 by default), cut at the end of a word.
A snapshot that is a prefix of the previous one is a stale one arriving late: it is ignored.

Conservative (for the rest of a reply once an edit was not an extension): text is emitted only
when it looks *stable*:
1. it is a prefix of both the current and the previous snapshot (it survived an edit),
2. it ends at least `conservative_holdback` before the end of both of them, at the end of a word
   (before whitespace, or after a CJK/wide character; a hard cut only after 256 unbroken chars),
   never inside a character cluster and never inside a markdown link/image still being written,
3. nothing at all while the whole text could still become a known Coze error text.

Guarantee (tested with random edit sequences, stale and duplicate snapshots): if no edit rewrites
text already emitted, every delta extends a prefix of the final text and emitted + finish(final)
== final. In conservative mode text is emitted only once it stood `conservative_holdback` before
the end of a snapshot, so rewrites closer to the end than that are harmless; in optimistic mode
the same holds for `holdback`, so the first rewrite of a reply must stay in that tail.

`finish(final)` returns the rest. When a rewrite reached text already sent (`diverged`), the rest
starts at the last word boundary of the common prefix: the client sees the stale words followed
by the corrected text. Nothing of the final text after that boundary is ever lost; the stale
words cannot be recalled. (Alternatives were worse: dropping the rest loses the answer; aligning
by position garbles it silently.)
"""

from __future__ import annotations

import re
import unicodedata

from cdp.domain.coze import could_become_error
from cdp.domain.prompt import cluster_may_continue, is_cluster_boundary

__all__ = ["DeltaAssembler", "common_prefix_len"]

#: Unbroken text (no whitespace / wide char) longer than this is cut anyway (long URLs, base64).
MAX_UNBROKEN = 256
#: A markdown link destination longer than this is not considered "still open" any more.
MAX_OPEN_LINK = 2048

_IMAGE = re.compile(r"!\[[^\]\n]*\]\([^()\s]*\)")


def common_prefix_len(a: str, b: str) -> int:
    """Length of the longest common prefix of `a` and `b`."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def _is_break_after(ch: str) -> bool:
    """Cutting right after `ch` is a word/line boundary."""
    return ch.isspace() or unicodedata.east_asian_width(ch) in ("W", "F")


def _is_word_end(text: str, i: int) -> bool:
    """Cutting `text` before index i ends a word: a non-space char followed by whitespace, or
    right after a wide (CJK) char. Whitespace is sent at the start of the next delta, never at the
    end of one: a separator that later turns out to be followed by inserted text (e.g. the
    "\\n![image](..)" render() appends while Coze is still writing) has not been sent yet."""
    prev = text[i - 1]
    if unicodedata.east_asian_width(prev) in ("W", "F"):
        return True
    return i < len(text) and text[i].isspace() and not prev.isspace()


def _open_markdown_start(s: str) -> int | None:
    """Where a markdown link/image that is still being written starts in `s`, if any (> floor)."""
    j = s.rfind("](")
    if j != -1:
        dest = s[j + 2 :]
        if ")" not in dest and "\n" not in dest and len(dest) <= MAX_OPEN_LINK:
            k = s.rfind("[", 0, j)
            if k != -1 and "\n" not in s[k:j]:
                return k - 1 if k > 0 and s[k - 1] == "!" else k
            return j
    m = s.rfind("![")
    if m != -1:
        alt = s[m + 2 :]
        close = alt.find("]")
        if "\n" not in alt and len(alt) <= MAX_OPEN_LINK and (close == -1 or close == len(alt) - 1):
            return m
    return None


def _images_at_end(s: str) -> int:
    """Where the text before the markdown images (and whitespace) that end `s` ends; len(s) if
    `s` does not end with an image."""
    end = len(s)
    while True:
        t = s[:end].rstrip()
        j = t.rfind("![")
        if j == -1 or not _IMAGE.fullmatch(t, j):
            return end
        end = len(t[:j].rstrip())


def _back_to_word_end(text: str, end: int, floor: int) -> int:
    """The last cut <= end (and > floor) at the end of a word and a cluster boundary, a hard cut
    in an unbroken run longer than MAX_UNBROKEN, else `floor`."""
    i = end
    while i > floor and not (_is_word_end(text, i) and is_cluster_boundary(text, i)):
        i -= 1
    if i > floor:
        return i
    if end - floor > MAX_UNBROKEN:  # a long unbroken run: hard cut at a cluster boundary
        i = end
        while i > floor and not is_cluster_boundary(text, i):
            i -= 1
        return i
    return floor


class DeltaAssembler:
    """Turns successive snapshots of one reply into append-only deltas (see the module doc)."""

    def __init__(self, holdback: int = 0, *, conservative_holdback: int = 24, optimistic: bool = True) -> None:
        if holdback < 0 or conservative_holdback < 0:
            raise ValueError("hold-backs must be >= 0")
        self._holdback = holdback
        self._conservative_holdback = conservative_holdback
        self._conservative = not optimistic
        self._emitted = ""
        self._prev: str | None = None
        self._diverged = False
        self._finished = False

    @property
    def emitted(self) -> str:
        """Everything returned so far by update() and finish(), concatenated."""
        return self._emitted

    @property
    def diverged(self) -> bool:
        """The latest text seen (the final one after finish) does not start with `emitted`."""
        return self._diverged

    @property
    def conservative(self) -> bool:
        """This reply streams conservatively: it was built so, or an edit rewrote its text."""
        return self._conservative

    @property
    def finished(self) -> bool:
        return self._finished

    def _optimistic_end(self, text: str) -> int:
        """End of the prefix of `text` to have sent when `text` is trusted (may be <= len(emitted))."""
        floor = len(self._emitted)
        if could_become_error(text):
            return 0
        end = _images_at_end(text)
        if cluster_may_continue(text[:end]):  # e.g. a ZWJ: cut before the unfinished cluster
            end -= 1
            while end > floor and not is_cluster_boundary(text, end):
                end -= 1
        end = min(end, len(text) - self._holdback)
        if end <= floor:
            return end
        # Open in what would be sent, or in the whole text ("![" at the end, "!" would be sent).
        for open_at in (_open_markdown_start(text[:end]), _open_markdown_start(text)):
            if open_at is not None:
                end = min(end, open_at)
        while end > floor and (text[end - 1].isspace() or not is_cluster_boundary(text, end)):
            end -= 1
        if self._holdback and end > floor:
            end = _back_to_word_end(text, end, floor)
        return end

    def _stable_end(self, text: str) -> int:
        """End of the prefix of `text` that is stable in conservative mode (may be <= len(emitted))."""
        if self._prev is None:
            return 0
        # Also hold back from the end of the previous snapshot: if `text` is a stale one arriving
        # late, the newest real text is nearer to `prev`, whose tail may still be rewritten.
        hold = self._conservative_holdback
        end = min(common_prefix_len(self._prev, text), len(text) - hold, len(self._prev) - hold)
        floor = len(self._emitted)
        if end <= floor:
            return end
        if could_become_error(text):
            return 0
        open_at = _open_markdown_start(text[:end])
        if open_at is not None:
            end = min(end, open_at)
        if end <= floor:
            return end
        return _back_to_word_end(text, end, floor)

    def update(self, text: str) -> str:
        """Feed the latest full text; returns the text to send now ("" if none).

        Duplicates, older snapshots arriving late and rewrites never produce a delta that does
        not extend what was emitted. The first edit that does not extend the previous snapshot
        switches the reply to conservative mode.
        """
        if self._finished:
            return ""
        text = text or ""
        self._diverged = not text.startswith(self._emitted)
        if not self._conservative:
            prev = self._prev
            if prev is not None and not text.startswith(prev):
                if prev.startswith(text):  # stale or duplicate: the newer text is still `prev`
                    return ""
                self._conservative = True  # a rewrite: from now on only text that survives edits
        if self._diverged:
            self._prev = text
            return ""
        end = self._stable_end(text) if self._conservative else self._optimistic_end(text)
        self._prev = text
        if end <= len(self._emitted):
            return ""
        delta = text[len(self._emitted) : end]
        self._emitted += delta
        return delta

    def finish(self, text: str) -> str:
        """Feed the final text; returns the remainder so that emitted == text whenever possible.

        If `text` does not start with what was already sent (`diverged` becomes True), returns
        text from the last word boundary of the common prefix (stale words stay visible, no
        final text is lost; a single space is inserted if the seam would glue two words).
        The caller must not call this for a Coze error text (check
        ReplyView.error first): it returns whatever it is given. Later calls return "".
        """
        if self._finished:
            return ""
        self._finished = True
        text = text or ""
        if text.startswith(self._emitted):
            self._diverged = False
            rest = text[len(self._emitted) :]
        else:
            self._diverged = True
            cp = common_prefix_len(self._emitted, text)
            i = cp
            while i > 0 and not (_is_break_after(text[i - 1]) and is_cluster_boundary(text, i)):
                i -= 1
            rest = text[i:]
            if rest and self._emitted and not _is_break_after(self._emitted[-1]):
                rest = " " + rest if not rest[0].isspace() else rest
        self._emitted += rest
        self._prev = text
        return rest
