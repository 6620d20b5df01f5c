import dataclasses

import pytest
from cdp.domain.coze import (
    BOT_LIMIT_TEXTS,
    SERVICE_TEXTS,
    USER_LIMIT_TEXTS,
    CozeError,
    CozeErrorKind,
    classify,
    could_become_error,
)

ALL = (
    [(t, CozeErrorKind.USER_LIMIT) for t in USER_LIMIT_TEXTS]
    + [(t, CozeErrorKind.BOT_LIMIT) for t in BOT_LIMIT_TEXTS]
    + [(t, CozeErrorKind.SERVICE) for t in SERVICE_TEXTS]
)


def test_counts_and_enum_values():
    assert len(USER_LIMIT_TEXTS) == 3 and len(BOT_LIMIT_TEXTS) == 1 and len(SERVICE_TEXTS) == 5
    assert CozeErrorKind.USER_LIMIT == "user_limit"
    assert CozeErrorKind.BOT_LIMIT == "bot_limit"
    assert CozeErrorKind.SERVICE == "service"


@pytest.mark.parametrize("text,kind", ALL)
def test_each_exact_string(text, kind):
    err = classify(text)
    assert err == CozeError(kind, text)
    assert could_become_error(text)


@pytest.mark.parametrize("text,kind", ALL)
def test_surrounding_and_internal_whitespace(text, kind):
    assert classify(f"\n  {text}  \n").kind == kind
    assert classify(text.replace(" ", "  ", 3)).kind == kind
    assert classify(text.replace("'", "\u2019")).kind == kind


def test_trailing_markdown_link_variant():
    base = USER_LIMIT_TEXTS[0]
    assert base.endswith("[Upgrade to Coze Premium to chat]")
    linked = base + "(https://www.coze.com/premium?from=discord)"
    assert classify(linked).kind == CozeErrorKind.USER_LIMIT
    assert classify(linked + "\n").kind == CozeErrorKind.USER_LIMIT
    assert classify(base + "(<https://www.coze.com/premium>)").kind == CozeErrorKind.USER_LIMIT
    # still being streamed: an open link after the known text could become the error
    assert could_become_error(base + "(https://www.co")
    assert could_become_error(base + "(")


@pytest.mark.parametrize(
    "text",
    [
        "The bot said: I'm sorry, but I can't assist with that.",
        "I'm sorry, but I can't assist with that. However, here is a safer alternative: ...",
        "There are too many users now.",
        "You have exceeded the daily limit for sending messages to the bot.",
        (
            'Coze sometimes replies "Something wrong occurs, please retry. If the error persists, '
            'please contact the support team." when it is overloaded.'
        ),
        "",
        "   ",
        "Hello!",
        USER_LIMIT_TEXTS[1] * 2,
    ],
)
def test_normal_answers_do_not_match(text):
    assert classify(text) is None


def test_could_become_error_prefixes():
    for text, _ in ALL:
        for i in range(1, len(text) + 1):
            prefix = text[:i]
            if prefix.strip():
                assert could_become_error(prefix), prefix
    assert could_become_error("  Hi there!  ")
    assert not could_become_error("")
    assert not could_become_error("   ")
    assert not could_become_error("Hi there! How can I help you today?")
    assert not could_become_error("Sure! Here is")
    assert not could_become_error(USER_LIMIT_TEXTS[1] + " Anyway, here is the answer")


BANNED = (
    "credit",
    "balance",
    "permission denied",
    "quota",
    "insufficient",
    "forbidden",
    "not allowed",
    "api key",
    "restricted",
    "unauthorized",
)


@pytest.mark.parametrize("kind", list(CozeErrorKind))
def test_public_messages_avoid_one_api_trigger_words(kind):
    msg = CozeError(kind, "whatever credits balance").public_message
    assert msg and msg.strip() == msg
    low = msg.lower()
    for word in BANNED:
        assert word not in low, (kind, word)
    assert "coze" in low


def test_user_limit_public_message():
    assert CozeError(CozeErrorKind.USER_LIMIT, "x").public_message == (
        "The Discord account used for this request reached Coze's daily limit; retry later."
    )


def test_coze_error_is_frozen():
    err = CozeError(CozeErrorKind.SERVICE, "x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        err.text = "y"  # type: ignore[misc]
