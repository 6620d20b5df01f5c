"""Hypothesis on prompt splitting (cdp.domain.prompt.split_for_discord / split_within), at Discord's
real limit (2000) and at small ones, with text made of character clusters that must never be cut:
combining marks, emoji with skin tones and ZWJ sequences, flags (regional-indicator pairs), CRLF,
Hangul jamo. test_domain_properties.py keeps the basic split property; these add clusters, the cut
preference, the part count and the PROMPT_MAX_PARTS refusal.
"""

from __future__ import annotations

import math

import pytest
from cdp.domain.prompt import (
    DISCORD_MESSAGE_LIMIT,
    MENTION,
    SPLIT_LOOKBACK,
    PromptError,
    is_cluster_boundary,
    split_for_discord,
    split_within,
)
from hypothesis import given, settings
from hypothesis import strategies as st

BOT = "1300000000000000001"
SUFFIX = MENTION.format(bot_id=BOT)
CLUSTERS = ["a", "b", " ", "\n", "\r\n", "中", "😀", "e\u0301", "a\u0308\u0323", "👍🏽", "🇫🇷", "🇯🇵",
            "👩\u200d💻", "👨\u200d👩\u200d👧", "\u1100\u1161\u11a8", "☺\ufe0f", "\t"]
CLUSTER_TEXT = st.lists(st.sampled_from(CLUSTERS), max_size=60).map("".join)
# long prompts at the real limit: runs of clusters, some without any whitespace at all
RUN = st.one_of(CLUSTER_TEXT, st.tuples(st.sampled_from(CLUSTERS), st.integers(1, 900)).map(lambda t: t[0] * t[1]))
LONG = st.lists(RUN, min_size=1, max_size=30).map("".join)


def boundaries(parts: list[str]) -> list[int]:
    out, pos = [], 0
    for p in parts[:-1]:
        pos += len(p)
        out.append(pos)
    return out


def check_split(prompt: str, limit: int) -> list[str]:
    parts = split_for_discord(prompt, BOT, limit=limit)
    assert all(parts) and all(len(p) <= limit for p in parts), [len(p) for p in parts]
    assert parts[-1].endswith(SUFFIX) and SUFFIX not in "".join(parts[:-1])
    assert "".join(parts) == prompt + SUFFIX  # nothing lost, added or reordered
    for cut in boundaries(parts):  # no cluster is cut (every cluster here is far shorter than a part)
        assert is_cluster_boundary(prompt, cut), (cut, prompt[cut - 3:cut + 3])
    return parts


@settings(max_examples=200, deadline=None)
@given(prompt=LONG)
def test_split_at_discords_limit(prompt):
    parts = check_split(prompt, DISCORD_MESSAGE_LIMIT)
    # few parts: every part but the last fills at least its window less the look-back (and a cluster)
    for p in parts[:-1]:
        assert len(p) >= DISCORD_MESSAGE_LIMIT - SPLIT_LOOKBACK - 8, len(p)
    assert len(parts) <= math.ceil(len(prompt + SUFFIX) / (DISCORD_MESSAGE_LIMIT - SPLIT_LOOKBACK - 8))


@settings(max_examples=300, deadline=None)
@given(prompt=st.lists(CLUSTER_TEXT, max_size=12).map("".join), limit=st.integers(40, 160))
def test_split_small_limits(prompt, limit):
    parts = check_split(prompt, limit)
    # The cut prefers a line end, then whitespace, within the last SPLIT_LOOKBACK characters of the
    # window (and never where it would cut a cluster): a part that ends otherwise had none there.
    n, pos = len(prompt), 0
    for p in parts[:-1]:
        end = min(pos + limit, n - 1)
        low = max(pos + 1, end - SPLIT_LOOKBACK)
        usable = [k for k in range(low - 1, end) if k >= pos and is_cluster_boundary(prompt, k + 1)]
        if not p.endswith("\n"):
            assert not [k for k in usable if prompt[k] == "\n"], (p, prompt[pos:end])
            if not p[-1].isspace():
                assert not [k for k in usable if prompt[k].isspace()], (p, prompt[pos:end])
        pos += len(p)


@settings(max_examples=150, deadline=None)
@given(prompt=LONG, max_parts=st.integers(1, 6))
def test_split_within_refuses_past_max_parts(prompt, max_parts):
    try:
        parts = split_within(prompt, BOT, max_parts)
    except PromptError as exc:
        assert exc.code == "prompt_too_long" and exc.param == "messages"
        assert len(split_for_discord(prompt, BOT)) > max_parts
        return
    assert parts == split_for_discord(prompt, BOT) and len(parts) <= max_parts


@pytest.mark.parametrize("prompt", ["", "\n", "🇫🇷" * 1500, "e\u0301" * 1500, "\r\n" * 1500, "x" * 1997])
def test_split_edges(prompt):
    check_split(prompt, DISCORD_MESSAGE_LIMIT)
