"""max_tokens and stop applied to an answer (cdp.domain.output), whole and as a stream of deltas."""

from __future__ import annotations

from cdp.domain.output import LENGTH, STOP, LimitedStream, OutputLimiter
from cdp.domain.stream import DeltaAssembler
from cdp.domain.tokens import count_tokens, truncate_tokens
from hypothesis import given, settings
from hypothesis import strategies as st

ANSWER = "The quick brown fox jumps over the lazy dog. 你好 🤖 and then it stops here, END of story."


def stream(limiter: OutputLimiter, deltas: list[str]) -> str:
    out = "".join(limiter.feed(d) for d in deltas)
    return out + limiter.finish()


def test_no_limit_passes_everything_through():
    lim = OutputLimiter()
    assert not lim.active
    assert stream(lim, ["ab", "c", "", "d"]) == "abcd" and lim.finish_reason is None


def test_stop_cuts_before_the_first_occurrence_of_any_stop_string():
    assert OutputLimiter(stop=["END", "fox"]).apply(ANSWER) == ("The quick brown ", STOP)
    assert OutputLimiter(stop="nowhere").apply(ANSWER) == (ANSWER, None)
    assert OutputLimiter(stop=["The"]).apply(ANSWER) == ("", STOP)


def test_stop_split_across_two_deltas_is_found_before_any_of_it_is_sent():
    lim = OutputLimiter(stop=["STOP HERE"])
    sent = [lim.feed("one two STOP"), lim.feed(" HERE three")]
    assert "STOP" not in "".join(sent) and lim.done
    assert "".join(sent) == "one two " and lim.finish_reason == STOP
    assert lim.feed("more") == "" and lim.finish("rest") == ""


def test_stream_holds_back_only_the_longest_stop_minus_one():
    lim = OutputLimiter(stop=["abc", "x"])
    assert lim.feed("0123456789") == "01234567"  # "89" could start "abc"
    assert lim.finish() == "89" and lim.finish_reason is None


def test_max_tokens_cuts_at_that_many_tokens_with_length():
    text, reason = OutputLimiter(max_tokens=5).apply(ANSWER)
    assert reason == LENGTH and ANSWER.startswith(text) and count_tokens(text) == 5
    assert OutputLimiter(max_tokens=10_000).apply(ANSWER) == (ANSWER, None)


def test_a_stop_within_the_token_limit_wins_and_one_after_it_loses():
    assert OutputLimiter(max_tokens=50, stop=["fox"]).apply(ANSWER) == ("The quick brown ", STOP)
    text, reason = OutputLimiter(max_tokens=2, stop=["fox"]).apply(ANSWER)
    assert (text, reason) == ("The quick", LENGTH)


def test_truncate_tokens_never_cuts_inside_a_character():
    text = "🤖🤖🤖你好你好"
    for n in range(0, count_tokens(text) + 2):
        cut = truncate_tokens(text, n)
        assert text.startswith(cut) and count_tokens(cut) <= n


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(ANSWER)), max_size=8),
       st.lists(st.sampled_from(["END", "fox j", "o", ". 你", "zzz", "g. 你好 🤖"]), max_size=4),
       st.one_of(st.none(), st.integers(min_value=1, max_value=40)))
def test_any_split_sends_a_prefix_within_the_limits(cuts, stops, max_tokens):
    bounds = sorted(set(cuts))
    deltas = [ANSWER[a:b] for a, b in zip([0, *bounds], [*bounds, len(ANSWER)])]
    lim = OutputLimiter(max_tokens=max_tokens, stop=stops)
    sent = stream(lim, deltas)
    assert ANSWER.startswith(sent)
    assert not any(s in sent for s in stops)
    if max_tokens is not None:
        assert count_tokens(sent) <= max_tokens
    whole, reason = OutputLimiter(max_tokens=max_tokens, stop=stops).apply(ANSWER)
    if max_tokens is None:
        assert (sent, lim.finish_reason) == (whole, reason)


def test_limited_stream_chains_the_assembler_and_the_limiter():
    out = LimitedStream(DeltaAssembler(), OutputLimiter(stop=["lazy"]))
    edits = ["The quick", "The quick brown fox jumps over the la", "The quick brown fox jumps over the lazy dog."]
    sent = ""
    for e in edits:
        sent += out.update(e)
        if out.done:
            break
    assert out.done and sent == out.text == "The quick brown fox jumps over the "
    assert out.finish(edits[-1]) == ""


def test_the_stop_complete_first_wins_whatever_the_edit_boundaries():
    """". 你" is complete before the longer "g. 你好 🤖" that starts one character earlier: streamed
    (found by hypothesis, edits cut at 46 and 64) and whole, the answer ends before ". 你"."""
    stops = [". 你", "g. 你好 🤖"]
    deltas = [ANSWER[:46], ANSWER[46:64], ANSWER[64:]]
    lim = OutputLimiter(stop=stops)
    assert stream(lim, deltas) == ANSWER[: ANSWER.index(". 你")] and lim.finish_reason == "stop"
    assert OutputLimiter(stop=stops).apply(ANSWER) == (ANSWER[: ANSWER.index(". 你")], "stop")
