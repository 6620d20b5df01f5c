"""Sticky conversations (CONVERSATION_MODE=sticky): how a request is recognised as the next turn of a
conversation the proxy already answered. Pure: no I/O.

A chat request carries the whole history. Its *history* is every message before the new user turn;
its fingerprint is a hash of the normalized history (roles and contents; whitespace at the ends and
line endings do not count), scoped to the API key and the model. After answering, the proxy stores
the fingerprint of history + new turn + its own answer: the next request whose history hashes the
same is the next turn of that conversation. A conversation may also be named (`x-conversation-id`
header or the `user` field): its key is then the name, scoped the same way.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any

# Roles that make a history a dialog: a history of only system/developer messages is a first turn.
DIALOG_ROLES = frozenset({"user", "assistant", "tool", "function"})
# Extra message fields that change what the bot was told (name: a speaker; tool calls in agent loops).
FINGERPRINT_FIELDS = ("name", "tool_calls", "tool_call_id", "function_call")
# Key prefixes in the store: a history fingerprint, or a conversation named by the client.
HISTORY_KEY = "h"
NAMED_KEY = "n"
CONVERSATION_NAME_MAX = 256  # characters of an `x-conversation-id` header or `user` field


def _normalize_text(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def normalize_message(message: dict) -> dict[str, Any]:
    """The parts of a message that identify it: role, content (text normalized; parts kept as they
    are, images and files included) and the fields of FINGERPRINT_FIELDS that are set."""
    content = message.get("content")
    if isinstance(content, str):
        content = _normalize_text(content)
    elif isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        content = _normalize_text("\n".join(str(p.get("text") or "") for p in content))  # text-only parts
    elif content is None:
        content = ""
    out: dict[str, Any] = {"role": str(message.get("role") or ""), "content": content}
    for name in FINGERPRINT_FIELDS:
        if message.get(name) not in (None, "", []):
            out[name] = message[name]
    return out


def _digest(kind: str, scope: tuple[str, str], payload: Any) -> str:
    data = json.dumps([kind, scope[0], scope[1], payload], ensure_ascii=False, sort_keys=True,
                      separators=(",", ":"), default=str)
    return f"{kind}-" + hashlib.sha256(data.encode()).hexdigest()[:40]


def history_fingerprint(messages: list[dict], api_key: str | None, model: str) -> str:
    """The key of a history: equal for equal normalized messages, key and model."""
    return _digest(HISTORY_KEY, (api_key or "", model), [normalize_message(m) for m in messages])


def answered_fingerprint(messages: list[dict], answer: str, api_key: str | None, model: str) -> str:
    """The fingerprint the next turn's history will have: the request's messages and the answer given."""
    return history_fingerprint([*messages, {"role": "assistant", "content": answer}], api_key, model)


def named_key(name: str, api_key: str | None, model: str) -> str:
    """The key of a conversation named by the client (never the name itself: it may be personal)."""
    return _digest(NAMED_KEY, (api_key or "", model), name)


@dataclass(frozen=True)
class Turn:
    """A request split into its history and its new user turn."""

    history: list[dict]
    new: dict

    @property
    def is_dialog(self) -> bool:
        """The history holds earlier turns (not just system/developer instructions)."""
        return any(m.get("role") in DIALOG_ROLES for m in self.history)


def split_turn(messages: list[dict]) -> Turn | None:
    """(history, new user turn), or None when the request does not end with a user message (an agent
    loop's tool result, a prefilled assistant turn): such requests are answered in a fresh channel."""
    if not messages or messages[-1].get("role") != "user":
        return None
    return Turn(list(messages[:-1]), messages[-1])


@dataclass(frozen=True)
class StickyConversation:
    """One sticky conversation as stored: the key it is found by, its channel, the fingerprint its next
    turn's history must have, when it was last used, and the lease of the request answering in it."""

    key: str
    channel_id: str
    coze_bot_id: str
    fingerprint: str  # of history + last answer; for a named conversation, checked against the history
    last_used: float
    expires_at: float  # last_used + CONVERSATION_IDLE_TTL: after it, the conversation is gone
    lease_owner: str = ""  # request id of the request answering in it, "" when idle
    lease_until: float = 0.0

    def leased(self, now: float) -> bool:
        return bool(self.lease_owner) and self.lease_until > now

    def expired(self, now: float) -> bool:
        return self.expires_at <= now

    def idle(self, now: float) -> StickyConversation:
        return replace(self, lease_owner="", lease_until=0.0, last_used=now)


def least_recently_used(conversations: list[StickyConversation], now: float) -> list[StickyConversation]:
    """The conversations that may be released to free channels: expired ones first, then idle ones
    (not leased) by last use, oldest first. Leased ones (a request is answering) are never listed."""
    free = [c for c in conversations if not c.leased(now)]
    return sorted(free, key=lambda c: (not c.expired(now), c.last_used))
