"""Prompt building: OpenAI messages -> the text posted in Discord, and splitting it into messages.

Discord counts message length in Unicode code points (its API is Python 3: discord-api-docs#1315),
which is exactly ``len()`` of a Python ``str``.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

__all__ = [
    "DISCORD_MESSAGE_LIMIT",
    "LONGEST_BOT_ID",
    "MENTION",
    "PromptError",
    "build_prompt",
    "check_request_size",
    "cluster_may_continue",
    "is_cluster_boundary",
    "message_text",
    "split_for_discord",
    "split_within",
]

#: Appended to the (last part of the) prompt, as the original does: prompt + "\n <@COZE_BOT_ID>".
MENTION = "\n <@{bot_id}>"

#: Discord's limit on a message's length (code points), for user accounts without Nitro.
DISCORD_MESSAGE_LIMIT = 2000

#: The longest snowflake (21 digits): the mention of an unknown bot is never longer.
LONGEST_BOT_ID = "9" * 21

#: How far back from the end of a window split_for_discord looks for a nice cut ("\n", then space).
SPLIT_LOOKBACK = 200

_TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})
_IMAGE_PART_TYPES = frozenset({"image_url", "input_image", "image"})
_FILE_PART_TYPES = frozenset({"file", "input_file"})


class PromptError(ValueError):
    """The request's messages cannot make a prompt. `param` names the offending request field."""

    def __init__(self, message: str, param: str | None = "messages", code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


# --------------------------------------------------------------------------------------------
# message content -> text


def _usable_url(url: Any) -> str | None:
    """A URL worth putting into a prompt: non-empty text, never an inline data: URL."""
    if not isinstance(url, str):
        return None
    url = url.strip()
    if not url or url[:5].lower() == "data:":
        return None
    return url


def _part_text(part: Any) -> str | None:
    if isinstance(part, str):
        return part
    if not isinstance(part, dict):
        return None
    kind = part.get("type")
    if kind is not None and not isinstance(kind, str):  # {} or [] (not hashable): not a part we know
        return None
    if kind in _TEXT_PART_TYPES or (kind is None and isinstance(part.get("text"), str)):
        text = part.get("text")
        return text if isinstance(text, str) else None
    if kind in _IMAGE_PART_TYPES:
        image = part.get("image_url", part.get("url"))
        if isinstance(image, dict):
            image = image.get("url")
        return _usable_url(image)
    if kind in _FILE_PART_TYPES:
        file = part.get("file")
        if isinstance(file, dict):
            return _usable_url(file.get("url") or file.get("file_url"))
        return _usable_url(part.get("file_url") or part.get("url"))
    return None


def message_text(content: Any) -> str:
    """OpenAI message content flattened to text.

    str -> itself; None -> ""; a list of parts -> text parts and image/file URLs, each on its own
    line (joined with "\\n"). Inline ``data:`` URLs are dropped (the service replaces them with
    uploaded attachment URLs beforehand; one that slips through must not put megabytes of base64
    into a Discord prompt). Unknown part types are ignored.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        content = [content]
    if isinstance(content, (list, tuple)):
        pieces = [t for t in (_part_text(p) for p in content) if t]
        return "\n".join(pieces)
    return str(content)


# --------------------------------------------------------------------------------------------
# messages -> prompt


def build_prompt(messages: list[dict], all_dialog_record: bool) -> str:
    """The text to post for a chat request.

    all_dialog_record=True (ALL_DIALOG_RECORD_ENABLE=1): the whole conversation as compact JSON
    ``[{"role":..,"content":".."},..]`` (contents flattened by :func:`message_text`).
    False: the flattened content of the last message whose role is "user".
    Raises :class:`PromptError` when there is no user message (False) or nothing to say.
    """
    if not isinstance(messages, (list, tuple)) or not messages:
        raise PromptError("messages must be a non-empty array", "messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise PromptError(f"messages[{i}] must be an object", f"messages[{i}]")

    if all_dialog_record:
        records = [
            {"role": str(m.get("role") or ""), "content": message_text(m.get("content"))} for m in messages
        ]
        if not any(r["content"].strip() for r in records):
            raise PromptError("messages contain no text", "messages")
        return json.dumps(records, ensure_ascii=False, separators=(",", ":"))

    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            text = message_text(messages[i].get("content"))
            if not text.strip():
                raise PromptError("the last user message is empty", f"messages[{i}].content")
            return text
    raise PromptError("messages contain no message with role 'user'", "messages")


def check_request_size(messages: list[dict], max_messages: int, max_chars: int) -> None:
    """Refuse a request with more than `max_messages` messages or more than `max_chars` characters of
    message text (as :func:`message_text` flattens it), before a prompt is built or counted."""
    if isinstance(messages, (list, tuple)) and len(messages) > max_messages:
        raise PromptError(f"messages has {len(messages)} entries, over the limit of {max_messages} "
                          "(PROMPT_MAX_MESSAGES).", "messages", code="too_many_messages")
    total = 0
    for m in messages if isinstance(messages, (list, tuple)) else ():
        if isinstance(m, dict):
            total += len(message_text(m.get("content")))
            if total > max_chars:
                raise PromptError(f"The messages hold over {max_chars} characters of text (PROMPT_MAX_CHARS); "
                                  "shorten them.", "messages", code="prompt_too_long")


# --------------------------------------------------------------------------------------------
# splitting


def _joins(prev: str, nxt: str) -> bool:
    """True if `prev` and `nxt` belong to one user-perceived character (must not be cut apart)."""
    n, p = ord(nxt), ord(prev)
    if 0xDC00 <= n <= 0xDFFF and 0xD800 <= p <= 0xDBFF:  # lone surrogates forming a pair
        return True
    if n == 0x200D or p == 0x200D:  # zero-width joiner (emoji ZWJ sequences)
        return True
    if 0xFE00 <= n <= 0xFE0F or 0xE0100 <= n <= 0xE01EF:  # variation selectors
        return True
    if 0x1F3FB <= n <= 0x1F3FF:  # emoji skin-tone modifiers
        return True
    if 0xE0020 <= n <= 0xE007F:  # tag characters (flag subdivisions)
        return True
    if prev == "\r" and nxt == "\n":
        return True
    if unicodedata.combining(nxt) or unicodedata.category(nxt) in ("Mn", "Me", "Mc"):
        return True
    return 0x1160 <= n <= 0x11FF and 0x1100 <= p <= 0x11FF  # conjoining Hangul jamo


def is_cluster_boundary(text: str, i: int) -> bool:
    """True if cutting `text` before index `i` does not split a character cluster."""
    if i <= 0 or i >= len(text):
        return True
    if _is_ri(text[i]) and _is_ri(text[i - 1]):
        # Regional indicators pair up into flags from the start of their run.
        run = 0
        j = i - 1
        while j >= 0 and _is_ri(text[j]):
            run += 1
            j -= 1
        return run % 2 == 0
    return not _joins(text[i - 1], text[i])


def cluster_may_continue(text: str) -> bool:
    """True if the last character cluster of `text` is unfinished: what ends it only makes sense
    with more to come (a zero-width joiner, half of a surrogate pair or of a flag, a Hangul leading
    consonant, a virama). A complete cluster may still take an optional mark or skin tone; that is
    not "unfinished": sent in two pieces it still concatenates to the same text."""
    if not text:
        return False
    last = ord(text[-1])
    if last == 0x200D or 0xD800 <= last <= 0xDBFF:
        return True
    if 0x1100 <= last <= 0x115F or 0xA960 <= last <= 0xA97F:  # Hangul choseong: a vowel must follow
        return True
    if unicodedata.combining(text[-1]) == 9:  # virama: a conjunct is being formed
        return True
    if _is_ri(text[-1]):
        run = len(text) - len(text.rstrip("".join(chr(c) for c in range(0x1F1E6, 0x1F200))))
        return run % 2 == 1
    return False


def _is_ri(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def _safe_back(text: str, i: int, floor: int) -> int:
    """The largest cluster boundary <= i and > floor, or i itself if there is none."""
    j = i
    while j > floor and not is_cluster_boundary(text, j):
        j -= 1
    return j if j > floor else i


def _choose_cut(text: str, start: int, end: int) -> int:
    """A cut in (start, end]: after the last "\\n", else after the last whitespace, within the
    last SPLIT_LOOKBACK characters of the window; else a hard cut (at a cluster boundary)."""
    low = max(start + 1, end - SPLIT_LOOKBACK)
    nl = text.rfind("\n", low - 1, end)
    if nl != -1 and nl + 1 > start and is_cluster_boundary(text, nl + 1):
        return nl + 1
    for k in range(end - 1, low - 2, -1):
        if k >= start and text[k].isspace() and is_cluster_boundary(text, k + 1):
            return k + 1
    return _safe_back(text, end, start)


def split_for_discord(prompt: str, coze_bot_id: str, limit: int = 2000) -> list[str]:
    """Cut `prompt` into Discord messages of at most `limit` characters, mention included.

    The mention (``MENTION``) is appended to the last part only (Coze answers that one). Cuts
    prefer a newline, then whitespace, within the last ~200 characters of a window; the separator
    stays at the end of the earlier part, so ``"".join(parts)[:-len(mention)] == prompt``. Parts
    are never empty and never split a surrogate pair or a character from its combining marks /
    emoji modifiers (unless a single cluster is longer than a whole message). Text such as
    "@everyone" is kept verbatim: pings are prevented by allowed_mentions, not by editing text.
    """
    mention = MENTION.format(bot_id=coze_bot_id)
    last_room = limit - len(mention)
    if last_room < 1:
        raise ValueError(f"limit {limit} leaves no room next to the mention {mention!r}")
    if len(prompt) <= last_room:
        return [prompt + mention]

    parts: list[str] = []
    pos, n = 0, len(prompt)
    while n - pos > last_room:
        # A non-final part; never swallow the whole rest (the last part must not be empty).
        end = min(pos + limit, n - 1)
        cut = _choose_cut(prompt, pos, end)
        parts.append(prompt[pos:cut])
        pos = cut
    parts.append(prompt[pos:] + mention)
    return parts


def split_within(prompt: str, coze_bot_id: str, max_parts: int, limit: int = DISCORD_MESSAGE_LIMIT) -> list[str]:
    """:func:`split_for_discord`, refused with :class:`PromptError` (code ``prompt_too_long``) when the
    prompt would take more than `max_parts` Discord messages. A prompt longer than `max_parts` whole
    messages is refused without splitting it (the cost stays bounded for any input)."""
    too_long = PromptError(f"The prompt would take more than {max_parts} Discord messages of {limit} characters "
                           "(PROMPT_MAX_PARTS); shorten the messages.", "messages", code="prompt_too_long")
    if len(prompt) > max_parts * limit:
        raise too_long
    parts = split_for_discord(prompt, coze_bot_id, limit)
    if len(parts) > max_parts:
        raise too_long
    return parts
