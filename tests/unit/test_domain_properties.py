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


def run_model(asm, hold, edits, frozen=0, history=None):
    """Feed `edits`; Coze rewrites only text that never stood `hold` before the end of a snapshot."""
    cur = history[-1] if history else ""
    history = history if history is not None else []
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
        assert len(asm.emitted) <= max(frozen, 0)
    return cur


@settings(max_examples=150, deadline=None)
@given(hold=st.integers(0, 30), optimistic=st.booleans(), edits=st.lists(EDIT, max_size=40), tail=PIECE)
def test_stream_property(hold, optimistic, edits, tail):
    asm = DeltaAssembler(holdback=hold, conservative_holdback=hold, optimistic=optimistic)
    final = run_model(asm, hold, edits) + tail
    sent = asm.emitted
    assert sent + asm.finish(final) == final
    assert not asm.diverged


@settings(max_examples=150, deadline=None)
@given(
    hold=st.integers(1, 8),  # with 0 the whole extension is sent: a rewrite then reaches sent text
    conservative_hold=st.integers(0, 30),
    extensions=st.lists(PIECE, min_size=1, max_size=20),
    cut=st.floats(0, 1),
    repl=PIECE,
    after=st.lists(EDIT, max_size=30),
    tail=PIECE,
)
def test_stream_switch_property(hold, conservative_hold, extensions, cut, repl, after, tail):
    """Optimistic while edits extend; the first rewrite (of text not sent yet) switches the reply
    to conservative mode, which then absorbs rewrites inside its own window."""
    asm = DeltaAssembler(holdback=hold, conservative_holdback=conservative_hold)
    history = []
    run_model(asm, hold, [("ext", p) for p in extensions], history=history)
    assert not asm.conservative
    cur = history[-1]
    at = len(asm.emitted) + int(cut * (len(cur) - 1 - len(asm.emitted)))  # at or after the sent text
    if repl.startswith(cur[at:]) or cur[at:].startswith(repl):
        repl = ("a" if cur[at] != "a" else "b") + repl  # neither an extension nor a stale prefix
    cur = cur[:at] + repl
    history.append(cur)
    before = asm.emitted
    d = asm.update(cur)
    assert asm.emitted == before + d and cur.startswith(asm.emitted)
    assert asm.conservative and not asm.diverged
    frozen = max([len(asm.emitted)] + [len(h) - conservative_hold for h in history])
    final = run_model(asm, conservative_hold, after, frozen, history) + tail
    assert asm.conservative
    sent = asm.emitted
    assert sent + asm.finish(final) == final
    assert not asm.diverged


@settings(max_examples=100, deadline=None)
@given(pieces=st.lists(st.text(alphabet="kqx \n", min_size=1, max_size=8), min_size=1, max_size=20))
def test_optimistic_tail_is_only_whitespace(pieces):
    """Plain text (no markdown, no cluster, nothing like a Coze error) is sent whole at once, but
    for trailing whitespace."""
    asm = DeltaAssembler()
    cur = ""
    for p in pieces:
        cur += p
        asm.update(cur)
        assert not cur[len(asm.emitted) :].strip()
    assert not asm.conservative


@settings(max_examples=150, deadline=None)
@given(prompt=st.lists(ALPHABET, max_size=400).map("".join), limit=st.integers(26, 120))
def test_split_property(prompt, limit):
    mention = MENTION.format(bot_id="1")
    parts = split_for_discord(prompt, "1", limit=limit)
    assert all(parts) and all(len(p) <= limit for p in parts)
    assert parts[-1].endswith(mention)
    assert "".join(parts)[: -len(mention)] == prompt
