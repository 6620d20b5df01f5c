"""Coze reply texts that are errors, not answers (exact strings from the original, BEHAVIOR.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "BOT_LIMIT_TEXTS",
    "SERVICE_TEXTS",
    "USER_LIMIT_TEXTS",
    "CozeError",
    "CozeErrorKind",
    "classify",
    "could_become_error",
]


class CozeErrorKind(StrEnum):
    USER_LIMIT = "user_limit"  # this Discord user reached Coze's daily limit: rest the token
    BOT_LIMIT = "bot_limit"  # the bot's developer ran out of Coze budget: rest the bot
    SERVICE = "service"  # any other error text from Coze


USER_LIMIT_TEXTS: tuple[str, ...] = (
    (
        "Hi there! You've used up your free chat credits. To continue enjoying our service, please "
        "consider upgrading to our premium plan [Upgrade to Coze Premium to chat]"
    ),
    "You have exceeded the daily limit for sending messages to the bot. Please try again later.",
    (
        "Hi there! You've used up your credits for today. To continue enjoying our service, please "
        "try again tomorrow or consider upgrading to our premium plan."
    ),
)
BOT_LIMIT_TEXTS: tuple[str, ...] = (
    (
        "The bot's usage is covered by the developer, but due to the developer's message credits "
        "being exhausted, the bot is temporarily unavailable."
    ),
)
SERVICE_TEXTS: tuple[str, ...] = (
    "Something wrong occurs, please retry. If the error persists, please contact the support team.",
    "Some error occurred. Please try again or contact the support team in our communities.",
    "We've detected unusual traffic from your network, so Coze is temporarily unavailable.",
    "There are too many users now. Please try again a bit later.",
    "I'm sorry, but I can't assist with that.",
)

# Our own words for API clients. one-api / new-api disable an upstream channel when an error
# message contains words such as "credit", "balance", "quota", "permission denied"; a Coze limit
# on one Discord account must not take the whole proxy out of their rotation, so these messages
# avoid that vocabulary (a unit test checks it).
_PUBLIC_MESSAGES = {
    "user_limit": "The Discord account used for this request reached Coze's daily limit; retry later.",
    "bot_limit": "This Coze bot is temporarily unavailable because its developer's usage limit "
    "was reached; retry later or use another model.",
    "service": "Coze answered with an error instead of a reply (temporary upstream problem); retry later.",
}


@dataclass(frozen=True)
class CozeError:
    kind: CozeErrorKind
    text: str  # the Coze text as received (for logs; never shown to clients as is)

    @property
    def public_message(self) -> str:
        return _PUBLIC_MESSAGES[str(self.kind)]


# --------------------------------------------------------------------------------------------
# normalisation: whitespace, typographic apostrophes, case, "[label](url)" -> "[label]"

_LINK = re.compile(r"\[([^\[\]\n]*)\]\(\s*<?[^()\s<>]*>?\s*\)")
_WS = re.compile(r"\s+")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u00a0": " "})


def _norm(text: str) -> str:
    text = text.translate(_APOSTROPHES)
    text = _LINK.sub(r"[\1]", text)
    return _WS.sub(" ", text).strip().casefold()


_KNOWN: tuple[tuple[str, CozeErrorKind], ...] = tuple(
    [(_norm(t), CozeErrorKind.USER_LIMIT) for t in USER_LIMIT_TEXTS]
    + [(_norm(t), CozeErrorKind.BOT_LIMIT) for t in BOT_LIMIT_TEXTS]
    + [(_norm(t), CozeErrorKind.SERVICE) for t in SERVICE_TEXTS]
)
_BY_TEXT = {k: kind for k, kind in _KNOWN}
# "[label" / "[label](partial-url" still being streamed after a known text ending in "[label]".
_OPEN_LINK_TAIL = re.compile(r"\(\s*<?[^()\s<>]*$")


def classify(text: str) -> CozeError | None:
    """The Coze error this whole reply text is, or None for a normal answer.

    The whole text must be one of the known strings (modulo surrounding/repeated whitespace, case,
    typographic apostrophes and a markdown link target after "[label]"); an answer that merely
    quotes such a sentence is not an error.
    """
    if not text or len(text.strip()) > 400:
        return None
    kind = _BY_TEXT.get(_norm(text))
    return CozeError(kind, text) if kind is not None else None


def could_become_error(text: str) -> bool:
    """True if the stripped text is a non-empty prefix of a known error text (or one already).

    The stream holds such text back until it is decided.
    """
    if not text or len(text.strip()) > 400:
        return False
    n = _norm(text)
    if not n:
        return False
    for known, _kind in _KNOWN:
        if known.startswith(n):
            return True
        # "...premium plan [Upgrade to Coze Premium to chat](https://www.co" (link still open)
        if known.endswith("]") and n.startswith(known) and _OPEN_LINK_TAIL.fullmatch(n[len(known) :]):
            return True
    return False
