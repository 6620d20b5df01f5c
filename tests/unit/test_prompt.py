import json
import random

import pytest
from cdp.domain.prompt import (
    MENTION,
    PromptError,
    build_prompt,
    is_cluster_boundary,
    message_text,
    split_for_discord,
)

BOT = "1234567890123456789"
M = MENTION.format(bot_id=BOT)  # "\n <@1234567890123456789>" (24 chars)


# ---------------------------------------------------------------- message_text


def test_mention_format_matches_original():
    assert MENTION == "\n <@{bot_id}>"
    assert M == f"\n <@{BOT}>"


@pytest.mark.parametrize("content,expected", [(None, ""), ("", ""), ("hi", "hi"), ("a\nb", "a\nb")])
def test_message_text_scalars(content, expected):
    assert message_text(content) == expected


def test_message_text_parts_joined_with_newlines():
    content = [
        {"type": "text", "text": "What is in"},
        {"type": "text", "text": "these pictures?"},
        {"type": "image_url", "image_url": {"url": "https://cdn.example/a.png", "detail": "high"}},
        {"type": "image_url", "image_url": "https://cdn.example/b.png"},
        {"type": "file", "file": {"filename": "x.pdf", "url": "https://cdn.example/x.pdf"}},
        {"type": "file", "file": {"file_url": "https://cdn.example/y.pdf"}},
        {"type": "input_text", "text": "thanks"},
    ]
    assert message_text(content) == (
        "What is in\nthese pictures?\nhttps://cdn.example/a.png\nhttps://cdn.example/b.png\n"
        "https://cdn.example/x.pdf\nhttps://cdn.example/y.pdf\nthanks"
    )


def test_message_text_drops_data_urls_and_unknown_parts():
    content = [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 100000}},
        {"type": "image_url", "image_url": "DATA:image/png;base64,AAAA"},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,AAA"}},
        {"type": "audio", "input_audio": {"data": "AAA"}},
        {"type": "image_url", "image_url": {}},
        {"type": "text", "text": ""},
        42,
    ]
    assert message_text(content) == "look"


def test_message_text_single_part_dict_and_str_parts():
    assert message_text({"type": "text", "text": "x"}) == "x"
    assert message_text(["a", {"type": "text", "text": "b"}]) == "a\nb"


# ---------------------------------------------------------------- build_prompt

CONV = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "你好 @everyone"},
    {"role": "assistant", "content": "Hi!"},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "Describe"},
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
        ],
    },
]


def test_build_prompt_all_dialog_record_is_compact_json():
    p = build_prompt(CONV, True)
    assert p == (
        '[{"role":"system","content":"Be brief."},{"role":"user","content":"你好 @everyone"},'
        '{"role":"assistant","content":"Hi!"},{"role":"user","content":"Describe\\nhttps://x/y.png"}]'
    )
    assert json.loads(p)[3]["content"] == "Describe\nhttps://x/y.png"


def test_build_prompt_last_user_only():
    assert build_prompt(CONV, False) == "Describe\nhttps://x/y.png"
    assert build_prompt(CONV[:3], False) == "你好 @everyone"


def test_build_prompt_last_user_even_if_followed_by_assistant():
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert build_prompt(msgs, False) == "q"


@pytest.mark.parametrize(
    "messages,flag",
    [
        ([], True),
        ([], False),
        ([{"role": "system", "content": "x"}], False),
        ([{"role": "user", "content": "   "}], False),
        ([{"role": "user", "content": None}], True),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": "data:image/png;base64,AA"}]}],
            False,
        ),
        (["not a dict"], True),
        (None, True),
    ],
)
def test_build_prompt_errors(messages, flag):
    with pytest.raises(PromptError) as e:
        build_prompt(messages, flag)
    assert isinstance(e.value, ValueError)
    assert e.value.param and e.value.param.startswith("messages")
    assert e.value.message


# ---------------------------------------------------------------- split_for_discord


def check_parts(parts, prompt, limit=2000):
    assert parts and all(parts)
    assert all(len(p) <= limit for p in parts), [len(p) for p in parts]
    assert parts[-1].endswith(M)
    assert all(M not in p for p in parts[:-1]) or M in prompt
    assert "".join(parts)[: -len(M)] == prompt


@pytest.mark.parametrize("n", [0, 1, 1975, 1976])
def test_short_prompt_is_one_message(n):
    prompt = "a" * n
    parts = split_for_discord(prompt, BOT)
    assert parts == [prompt + M]
    assert len(parts[0]) <= 2000


@pytest.mark.parametrize("total", [1999, 2000, 2001])
def test_exact_limits_with_mention(total):
    prompt = "b" * (total - len(M))
    parts = split_for_discord(prompt, BOT)
    check_parts(parts, prompt)
    assert len(parts) == (1 if total <= 2000 else 2)
    if total == 2001:
        assert len(parts[1]) == len(M) + 1  # one char moves to the last part, not empty


def test_prompt_of_exactly_limit_chars_without_mention():
    prompt = "c" * 2000
    parts = split_for_discord(prompt, BOT)
    check_parts(parts, prompt)
    assert len(parts) == 2


def test_prefers_newline_then_whitespace():
    prompt = "x" * 1850 + "\n" + "y" * 100 + " " + "z" * 500
    parts = split_for_discord(prompt, BOT)
    check_parts(parts, prompt)
    assert parts[0].endswith("\n") and len(parts[0]) == 1851
    prompt2 = "x" * 1850 + " " + "y" * 500
    parts2 = split_for_discord(prompt2, BOT)
    check_parts(parts2, prompt2)
    assert parts2[0] == "x" * 1850 + " "


def test_newline_beyond_lookback_is_not_used():
    prompt = "x" * 100 + "\n" + "y" * 3000
    parts = split_for_discord(prompt, BOT)
    check_parts(parts, prompt)
    assert len(parts[0]) == 2000  # hard cut, not at the early newline


def test_whitespace_is_never_lost():
    prompt = "line one\n\n   indented  two spaces\t\ttab\n" * 200
    parts = split_for_discord(prompt, BOT)
    check_parts(parts, prompt)


@pytest.mark.parametrize("ch", ["😀", "中", "🇫🇷", "e\u0301", "👍🏽", "👨\u200d👩\u200d👧", "❤\ufe0f"])
@pytest.mark.parametrize("offset", range(8))
def test_cut_never_splits_clusters(ch, offset):
    prompt = "a" * offset + ch * 1500
    parts = split_for_discord(prompt, BOT)
    check_parts(parts, prompt)
    for p in parts[:-1]:
        # the next part must not start with a char that joins the previous one
        pass
    pos = 0
    for p in parts[:-1]:
        pos += len(p)
        assert is_cluster_boundary(prompt, pos), (ch, offset, pos)


def test_lone_surrogates_pair_not_split():
    pair = "\ud83d\ude00"
    prompt = "a" + pair * 1500
    parts = split_for_discord(prompt, BOT)
    check_parts(parts, prompt)
    assert not parts[0].endswith("\ud83d")


def test_everyone_is_preserved_verbatim():
    prompt = "@everyone @here <@&123> hello\n" * 100
    parts = split_for_discord(prompt, BOT)
    check_parts(parts, prompt)
    assert "".join(parts).count("@everyone") == 100


def test_small_limits_and_invalid_limit():
    prompt = "hello world, this is a test of small limits " * 5
    parts = split_for_discord(prompt, BOT, limit=40)
    check_parts(parts, prompt, limit=40)
    with pytest.raises(ValueError):
        split_for_discord("x", BOT, limit=len(M))


def test_split_randomized():
    rng = random.Random(1234)
    alphabet = ["a", "b", " ", "\n", "中", "😀", "e\u0301", "\t", "👍🏽", "@everyone"]
    for _ in range(200):
        prompt = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 1500)))
        limit = rng.choice([30, 31, 50, 100, 2000])
        parts = split_for_discord(prompt, BOT, limit=limit)
        check_parts(parts, prompt, limit=limit)
