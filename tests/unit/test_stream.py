import random

import pytest
from cdp.domain.coze import BOT_LIMIT_TEXTS, SERVICE_TEXTS, USER_LIMIT_TEXTS
from cdp.domain.prompt import is_cluster_boundary
from cdp.domain.stream import MAX_UNBROKEN, DeltaAssembler, common_prefix_len

LOREM = (
    "Coze streams by editing its reply again and again. Every edit carries the whole text so far, "
    "and sometimes a recent word is rewritten.\n\n- item one\n- item two\n\nThe end. "
)


def feed(asm, snapshots):
    deltas = []
    for s in snapshots:
        before = asm.emitted
        d = asm.update(s)
        assert asm.emitted == before + d  # append-only
        deltas.append(d)
    return deltas


def growing(text, step=5):
    return [text[:i] for i in range(step, len(text) + 1, step)] + [text]


# ---------------------------------------------------------------- basics


def test_common_prefix_len():
    assert common_prefix_len("", "") == 0
    assert common_prefix_len("abc", "abd") == 2
    assert common_prefix_len("abc", "abc") == 3
    assert common_prefix_len("abc", "abcdef") == 3
    assert common_prefix_len("xbc", "abc") == 0
    a = "q" * 1000 + "x"
    assert common_prefix_len(a, "q" * 1000 + "y") == 1000


def test_pure_extension_streams_and_finishes_exactly():
    asm = DeltaAssembler()
    deltas = feed(asm, growing(LOREM, 3))
    assert "".join(deltas) == asm.emitted
    assert len(asm.emitted) > len(LOREM) // 2  # it really streamed
    assert all(len(LOREM) - len(asm.emitted) >= 0 for _ in [0])
    rest = asm.finish(LOREM)
    assert asm.emitted == LOREM and "".join(deltas) + rest == LOREM
    assert not asm.diverged and asm.finished


def test_first_snapshot_emits_nothing_and_single_snapshot_finishes():
    asm = DeltaAssembler()
    assert asm.update(LOREM) == ""
    assert asm.finish(LOREM) == LOREM


def test_holdback_and_word_boundary():
    asm = DeltaAssembler(holdback_chars=10)
    text = "alpha beta gamma delta epsilon zeta eta theta"
    feed(asm, [text, text])
    e = asm.emitted
    assert e and len(text) - len(e) >= 10
    assert e == "alpha beta gamma delta epsilon zeta"  # ends a word; the space goes with the next delta
    assert text.startswith(e)


def test_emitted_always_at_least_holdback_behind():
    asm = DeltaAssembler(holdback_chars=24)
    for s in growing(LOREM * 3, 1):
        asm.update(s)
        assert not asm.emitted or len(s) - len(asm.emitted) >= 24


def test_zero_holdback_still_needs_two_snapshots_to_agree():
    asm = DeltaAssembler(holdback_chars=0)
    assert asm.update("hello world ") == ""
    assert asm.update("hello world ") == "hello world"
    with pytest.raises(ValueError):
        DeltaAssembler(holdback_chars=-1)


def test_duplicates_produce_no_repeated_deltas():
    asm = DeltaAssembler(holdback_chars=5)
    s = "one two three four five six "
    d = feed(asm, [s, s, s, s])
    assert "".join(d) == asm.emitted and s.startswith(asm.emitted)
    assert sum(1 for x in d if x) == 1
    expected = s[len(asm.emitted) :]
    assert asm.finish(s) == expected
    assert asm.emitted == s


def test_older_snapshot_after_newer_produces_nothing():
    asm = DeltaAssembler(holdback_chars=5)
    new = "one two three four five six seven eight "
    old = "one two three four "
    feed(asm, [new, new])
    emitted = asm.emitted
    assert asm.update(old) == ""
    assert asm.update(old[:5]) == ""
    assert asm.emitted == emitted
    assert asm.update(new) == ""  # common prefix with the stale one: nothing new
    assert asm.finish(new + "nine.") == (new + "nine.")[len(emitted) :]
    assert not asm.diverged


def test_tail_rewrite_within_holdback_is_hidden():
    asm = DeltaAssembler(holdback_chars=24)
    snaps = [
        "The capital of France is ",
        "The capital of France is Pari",
        "The capital of France is Paris, a big citty",
        "The capital of France is Paris, a big city with",
        "The capital of France is **Paris**, a big city with many museums.",
        "The capital of France is **Paris**, a big city with many museums. It also has",
    ]
    final = "The capital of France is **Paris**, a big city with many museums. It also has the Seine."
    feed(asm, snaps)
    rest = asm.finish(final)
    assert asm.emitted == final and not asm.diverged
    assert rest


def test_markdown_being_formed_is_not_split():
    asm = DeltaAssembler(holdback_chars=4)
    url = "https://cdn.discordapp.com/attachments/1/2/image.png?ex=abc&is=def&hm=0123456789"
    final = f"Here is your picture: ![image]({url}) enjoy it a lot, really."
    for i in range(1, len(final) + 1):
        asm.update(final[:i])
        e = asm.emitted
        if "![" in e:
            assert f"![image]({url})" in e, e  # never an open image
        if "](" in e:
            assert ")" in e[e.rfind("](") :]
    assert asm.finish(final) + "" is not None and asm.emitted == final


def test_open_link_rewritten_is_safe():
    asm = DeltaAssembler(holdback_chars=4)
    snaps = [
        "See [the docs](https://exa",
        "See [the docs](https://exa",
        "See [the docs](https://example.org/a-very-long-path-that-keeps-going",
        "See [the docs](https://example.org/a-very-long-path-that-keeps-going",
    ]
    feed(asm, snaps)
    assert asm.emitted == "See"
    final = "See [the docs](https://example.org/new) now."
    assert asm.finish(final) == final[3:] and not asm.diverged


def test_text_inserted_before_appended_images_stays_consistent():
    # render() appends "\n![image](url)" after the content; Coze may keep writing the content.
    img = "\n![image](https://cdn.discordapp.com/attachments/1/2/cat.png?ex=1&hm=abcdef0123456789)"
    asm = DeltaAssembler()
    snaps = [
        "Here is the cat you asked for" + img,
        "Here is the cat you asked for" + img,
        "Here is the cat you asked for, drawn in watercolour" + img,
        "Here is the cat you asked for, drawn in watercolour" + img,
    ]
    for s in snaps:
        asm.update(s)
        assert snaps[-1].startswith(asm.emitted)
    assert asm.emitted
    final = "Here is the cat you asked for, drawn in watercolour. Enjoy!" + img
    asm.finish(final)
    assert asm.emitted == final and not asm.diverged


def test_unclosed_bracket_far_back_does_not_block_streaming():
    asm = DeltaAssembler(holdback_chars=8)
    text = "code: a[i](x\n" + "then plenty of normal text follows here " * 5
    feed(asm, [text, text])
    assert len(asm.emitted) > 100


@pytest.mark.parametrize("err", USER_LIMIT_TEXTS + BOT_LIMIT_TEXTS + SERVICE_TEXTS)
def test_error_text_is_never_streamed(err):
    asm = DeltaAssembler(holdback_chars=0)
    for i in range(1, len(err) + 1):
        assert asm.update(err[:i]) == ""
    assert asm.update(err) == ""
    assert asm.emitted == ""


def test_text_that_leaves_the_error_path_is_released():
    asm = DeltaAssembler(holdback_chars=4)
    assert asm.update("Hi there! ") == ""
    assert asm.update("Hi there! ") == ""
    assert asm.emitted == ""
    s = "Hi there! How can I help you today? Ask me anything."
    feed(asm, [s, s])
    assert asm.emitted.startswith("Hi there! How")


def test_cjk_without_spaces_streams():
    asm = DeltaAssembler(holdback_chars=5)
    text = "你好，我是扣子机器人。今天天气很好，我们去公园散步吧。" * 3
    feed(asm, growing(text, 4))
    assert len(asm.emitted) > len(text) // 2
    asm.finish(text)
    assert asm.emitted == text


def test_long_unbroken_run_is_hard_cut():
    asm = DeltaAssembler(holdback_chars=24)
    text = "x" * (MAX_UNBROKEN * 3)
    feed(asm, [text, text])
    assert len(asm.emitted) >= MAX_UNBROKEN
    asm.finish(text)
    assert asm.emitted == text


@pytest.mark.parametrize("cluster", ["😀", "👍🏽", "👨\u200d👩\u200d👧", "e\u0301", "🇫🇷", "\ud83d\ude00"])
def test_never_cuts_inside_a_cluster(cluster):
    text = cluster * 300
    for hold in (0, 1, 2, 3, 7):
        asm = DeltaAssembler(holdback_chars=hold)
        pos = 0
        for s in growing(text, 3):
            d = asm.update(s)
            if d:
                pos += len(d)
                assert is_cluster_boundary(text, pos), (cluster, hold, pos)
        asm.finish(text)
        assert asm.emitted == text


def test_rewrite_of_sent_text_diverges_least_bad():
    asm = DeltaAssembler(holdback_chars=2)
    s = "Hello wrold and friends "
    feed(asm, [s, s])
    assert asm.emitted == "Hello wrold and"
    assert asm.update("Hello world and friends, welcome") == ""  # rewrite reached sent text
    assert asm.diverged
    final = "Hello world and friends, welcome!"
    rest = asm.finish(final)
    assert asm.diverged
    assert rest == " world and friends, welcome!"  # from the word start in the common prefix, spaced
    assert asm.emitted == "Hello wrold and world and friends, welcome!"
    # nothing after the boundary is lost
    assert asm.emitted.endswith(final[len("Hello ") :])


def test_diverged_seam_gets_a_space_when_needed():
    asm = DeltaAssembler(holdback_chars=0)
    u = "y" * (MAX_UNBROKEN + 10)
    feed(asm, [u, u])
    assert asm.emitted == u
    rest = asm.finish("z" + u)
    assert asm.diverged and rest == " z" + u


def test_diverged_clears_when_text_comes_back():
    asm = DeltaAssembler(holdback_chars=0)
    s = "abc def ghi "
    feed(asm, [s, s])
    asm.update("xyz")
    assert asm.diverged
    asm.update(s + "jkl ")
    assert not asm.diverged


def test_after_finish_nothing_more():
    asm = DeltaAssembler()
    asm.update("a b c")
    assert asm.finish("a b c d") == "a b c d"
    assert asm.finish("a b c d e") == ""
    assert asm.update("a b c d e f") == ""
    assert asm.emitted == "a b c d"


def test_finish_with_empty_and_none():
    asm = DeltaAssembler()
    assert asm.update("") == ""
    assert asm.finish("") == ""
    assert asm.emitted == "" and not asm.diverged


# ---------------------------------------------------------------- randomized

WORDS = [
    "alpha",
    "beta",
    "中文",
    "字",
    "😀",
    "👍🏽",
    "e\u0301",
    "**bold**",
    "`code`",
    "[link](https://x.y/z)",
    "![image](https://cdn.x/a.png)",
    "\n",
    "\n\n",
    "- ",
    "1.",
    "…",
    "naïve",
    "x" * 40,
    "، ",
    "🇫🇷",
]


def random_piece(rng):
    n = rng.randint(1, 6)
    return "".join(rng.choice(WORDS) + rng.choice([" ", "", " ", "\n"]) for _ in range(n))


def run_random_session(rng, hold):
    """Model: Coze may rewrite any text that has not yet been `hold` characters behind the end of
    some snapshot (the hold-back window); text that once was that far behind the end is final."""
    asm = DeltaAssembler(holdback_chars=hold)
    cur = ""
    frozen = 0  # max over snapshots of len(snapshot) - hold
    history = []
    for _ in range(rng.randint(1, 60)):
        r = rng.random()
        if r < 0.55 or len(cur) <= frozen:
            cur = cur + random_piece(rng)
        elif r < 0.85:
            # rewrite (replace, shrink or grow) a tail that lies inside the hold-back window
            k = rng.randint(1, len(cur) - frozen)
            repl = "".join(rng.choice("abcXYZ *_()[]!中😀\n ") for _ in range(rng.randint(0, hold + 3)))
            cur = cur[: len(cur) - k] + repl
        frozen = max(frozen, len(cur) - hold)
        history.append(cur)
        if rng.random() < 0.15:
            stale = rng.choice(history)  # a late, out-of-order or duplicate snapshot
            before = asm.emitted
            d = asm.update(stale)
            assert asm.emitted == before + d
        before = asm.emitted
        d = asm.update(cur)
        assert asm.emitted == before + d  # append-only
        assert cur.startswith(asm.emitted), (asm.emitted, cur)
        assert len(asm.emitted) <= max(frozen, 0)
    final = cur + (random_piece(rng) if rng.random() < 0.5 else "")
    streamed = asm.emitted
    rest = asm.finish(final)
    assert streamed + rest == final
    assert not asm.diverged
    return len(streamed), len(final)


@pytest.mark.parametrize("seed", range(40))
def test_randomized_rewrites_within_holdback_never_corrupt(seed):
    rng = random.Random(seed)
    streamed = total = 0
    for _ in range(15):
        s, t = run_random_session(rng, rng.choice([4, 12, 24, 40]))
        streamed, total = streamed + s, total + t
    assert streamed > total // 4  # and it does stream, not just hold everything until finish
