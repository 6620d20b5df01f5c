"""Discord message objects -> ReplyMessage (listener side) and ReplySnapshot -> ReplyView (answering side)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cdp.domain.coze import CozeError, classify
from cdp.domain.model import ReplyMessage, ReplySnapshot

__all__ = [
    "ReplyView",
    "merge_message",
    "parse_timestamp_us",
    "render",
    "to_reply_message",
    "version_of",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DISCORD_TS = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{6})?\+00:00")
_US = timedelta(microseconds=1)


# --------------------------------------------------------------------------------------------
# timestamps / versions


def parse_timestamp_us(iso: str) -> int:
    """Microseconds since the epoch of a Discord ISO8601 timestamp.

    Accepts "2024-02-01T12:34:56.789000+00:00", without fraction, with 1..9 fraction digits
    (truncated to µs), with "Z", or without offset (taken as UTC). Raises ValueError otherwise.
    """
    if not isinstance(iso, str) or not iso.strip():
        raise ValueError(f"not a timestamp: {iso!r}")
    if _DISCORD_TS.fullmatch(iso):  # the form Discord sends (every edit): parsed as is
        return (datetime.fromisoformat(iso) - _EPOCH) // _US
    s = iso.strip()
    if s[-1:] in ("Z", "z"):
        s = s[:-1] + "+00:00"
    # Normalise the fraction to exactly 6 digits (fromisoformat is picky about some lengths).
    t = s.find("T") if "T" in s else s.find(" ")
    dot = s.find(".", max(t, 0))
    if dot != -1:
        end = dot + 1
        while end < len(s) and s[end].isdigit():
            end += 1
        frac = s[dot + 1 : end]
        if not frac:
            raise ValueError(f"not a timestamp: {iso!r}")
        s = s[:dot] + "." + (frac + "000000")[:6] + s[end:]
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // _US


def _try_us(value: Any) -> int | None:
    if not value:
        return None
    try:
        return parse_timestamp_us(value)
    except (ValueError, TypeError):
        return None


def version_of(raw: dict) -> int | None:
    """µs of edited_timestamp, else of timestamp, else None (missing or unparsable)."""
    if not isinstance(raw, dict):
        return None
    edited = _try_us(raw.get("edited_timestamp"))
    return edited if edited is not None else _try_us(raw.get("timestamp"))


def merge_message(prev: dict | None, update: dict) -> dict:
    """Apply a (possibly partial) MESSAGE_UPDATE to the last known message object.

    Keys absent from `update` keep their previous value; present keys (even null or empty)
    replace it. Shallow: a present "embeds" replaces the whole list. Returns a new dict.
    """
    merged = dict(prev) if prev else {}
    merged.update(update)
    return merged


# --------------------------------------------------------------------------------------------
# message -> ReplyMessage


def _id(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def _url(obj: Any) -> str | None:
    if isinstance(obj, dict):
        u = obj.get("url") or obj.get("proxy_url")
        if isinstance(u, str) and u:
            return u
    return None


def _image_urls(raw: dict) -> tuple[str, ...]:
    urls: list[str] = []
    for embed in raw.get("embeds") or ():
        if not isinstance(embed, dict):
            continue
        u = _url(embed.get("image")) or _url(embed.get("thumbnail"))
        if u:
            urls.append(u)
    for att in raw.get("attachments") or ():
        u = _url(att)
        if u:
            urls.append(u)
    return tuple(dict.fromkeys(urls))


def _suggestions(raw: dict) -> tuple[str, ...]:
    labels: list[str] = []
    for row in raw.get("components") or ():
        if not isinstance(row, dict) or row.get("type") != 1:
            continue
        for comp in row.get("components") or ():
            if isinstance(comp, dict) and comp.get("type") == 2:
                label = comp.get("label")
                if isinstance(label, str) and label.strip():
                    labels.append(label)
    return tuple(labels)


def to_reply_message(
    raw: dict,
    coze_bot_ids: set[str],
    prompt_id: str | None = None,
    fallback_version: int | None = None,
) -> ReplyMessage | None:
    """The ReplyMessage for a (merged) Discord message object, or None if it is not a Coze reply.

    Accepted when the author is one of `coze_bot_ids` (or, for an object without author, when
    the caller passes `prompt_id` because it already knows the message) and a prompt id is known
    (message_reference.message_id, else referenced_message.id, else `prompt_id`).
    version = version_of(raw), else `fallback_version`, else 0 (sorts before any real edit).
    """
    if not isinstance(raw, dict):
        return None
    message_id = _id(raw.get("id"))
    if message_id is None:
        return None
    author = raw.get("author")
    author_id = _id(author.get("id")) if isinstance(author, dict) else None
    if author_id is not None:
        if author_id not in {str(b) for b in coze_bot_ids}:
            return None
    elif prompt_id is None:
        return None

    ref = raw.get("message_reference")
    ref = ref if isinstance(ref, dict) else {}
    referenced = raw.get("referenced_message")
    referenced = referenced if isinstance(referenced, dict) else {}
    pid = _id(ref.get("message_id")) or _id(referenced.get("id")) or _id(prompt_id)
    if pid is None:
        return None

    version = version_of(raw)
    if version is None:
        version = fallback_version if fallback_version is not None else 0
    content = raw.get("content")
    return ReplyMessage(
        message_id=message_id,
        prompt_id=pid,
        channel_id=_id(raw.get("channel_id")) or _id(ref.get("channel_id")) or "",
        author_id=author_id or "",
        content=content if isinstance(content, str) else "",
        version=int(version),
        image_urls=_image_urls(raw),
        suggestions=_suggestions(raw),
        has_components=bool(raw.get("components")),
    )


# --------------------------------------------------------------------------------------------
# snapshot -> view


@dataclass(frozen=True)
class ReplyView:
    text: str  # the answer: contents joined, then images not already in it as markdown
    suggestions: tuple[str, ...]  # button labels of the last message
    done_by_buttons: bool  # the last message has components (Coze's completion signal)
    error: CozeError | None  # the whole reply is a known Coze error text
    image_urls: tuple[str, ...]  # every image URL of every part, in order, deduplicated
    has_text: bool  # text non-empty after strip


def _id_key(message_id: str) -> tuple[int, str]:
    # Snowflakes are decimal without leading zeros: (length, string) sorts them numerically.
    return (len(message_id), message_id)


def render(snapshot: ReplySnapshot) -> ReplyView:
    """Interpret every reply part seen so far for one prompt.

    Contents are concatenated in message-id order with no separator (Coze cuts one long answer
    into <=2000-character messages). Each image URL not already present in the text is appended
    as "\\n![image](url)" (no leading newline when the text is empty). `error` classifies the
    joined contents (not the appended images).
    """
    parts = sorted(snapshot.messages, key=lambda m: _id_key(m.message_id))
    content = "".join(m.content for m in parts)
    images = tuple(dict.fromkeys(u for m in parts for u in m.image_urls))
    text = content
    for url in images:
        if url not in content:
            text += ("\n" if text else "") + f"![image]({url})"
    last = parts[-1] if parts else None
    return ReplyView(
        text=text,
        suggestions=last.suggestions if last else (),
        done_by_buttons=bool(last and last.has_components),
        error=classify(content),
        image_urls=images,
        has_text=bool(text.strip()),
    )
