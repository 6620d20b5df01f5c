"""Property tests (hypothesis) for the stream assembler and the Discord splitter.

Skipped when hypothesis is not installed; the seeded random tests in test_stream.py and
test_prompt.py cover the same properties without it.
"""

import pytest

hypothesis = pytest.importorskip("hypothesis")
from cdp.domain.prompt import MENTION, split_for_discord
from cdp.domain.stream import DeltaAssembler
from hypothesis import given, settings
from hypothesis import strategies as st

ALPHABET = st.sampled_from(list("ab \n中😀]([)!*_") + ["e\u0301", "👍🏽", "🇫🇷", "![x](", "https://u/"])
PIECE = st.lists(ALPHABET, min_size=1, max_size=8).map("".join)

# an edit: ("ext", text) appends; ("rw", cut, text) rewrites the tail inside the hold-back window
EDIT = st.one_of(
    st.tuples(st.just("ext"), PIECE),
    st.tuples(st.just("rw"), st.floats(0, 1), st.lists(ALPHABET, max_size=6).map("".join)),
    st.tuples(st.just("dup"), st.integers(0, 1000)),
)


@settings(max_examples=150, deadline=None)
@given(hold=st.integers(0, 30), edits=st.lists(EDIT, max_size=40), tail=PIECE)
def test_stream_property(hold, edits, tail):
    asm = DeltaAssembler(holdback_chars=hold)
    cur, frozen, history = "", 0, []
    for e in edits:
        if e[0] == "ext":
            cur += e[1]
        elif e[0] == "rw" and len(cur) > frozen:
            k = max(1, int(e[1] * (len(cur) - frozen)))
            cur = cur[: len(cur) - k] + e[2]
        elif e[0] == "dup" and history:
            asm.update(history[e[1] % len(history)])  # stale or duplicate snapshot
        frozen = max(frozen, len(cur) - hold)
        history.append(cur)
        before = asm.emitted
        d = asm.update(cur)
        assert asm.emitted == before + d
        assert cur.startswith(asm.emitted)
    final = cur + tail
    sent = asm.emitted
    assert sent + asm.finish(final) == final
    assert not asm.diverged


@settings(max_examples=150, deadline=None)
@given(prompt=st.lists(ALPHABET, max_size=400).map("".join), limit=st.integers(26, 120))
def test_split_property(prompt, limit):
    mention = MENTION.format(bot_id="1")
    parts = split_for_discord(prompt, "1", limit=limit)
    assert all(parts) and all(len(p) <= limit for p in parts)
    assert parts[-1].endswith(mention)
    assert "".join(parts)[: -len(mention)] == prompt
