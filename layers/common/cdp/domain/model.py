"""Value objects shared by the listener, the stores and the answering side."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ReplyMessage:
    """One Discord message of a Coze reply, as last seen by the listener (partials already merged).

    `version` orders edits: microseconds of edited_timestamp (else timestamp). A store keeps a
    message only if the incoming version is >= the stored one, so duplicates and late,
    out-of-order events never move a reply backwards.
    """

    message_id: str
    prompt_id: str  # id of the prompt message this one replies to (message_reference.message_id)
    channel_id: str
    author_id: str
    content: str
    version: int
    image_urls: tuple[str, ...] = ()  # embeds[].image.url / thumbnail and attachments' urls, in order
    suggestions: tuple[str, ...] = ()  # labels of the buttons (components) Coze adds when done
    has_components: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_urls"] = list(self.image_urls)
        d["suggestions"] = list(self.suggestions)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReplyMessage:
        return cls(
            message_id=str(d["message_id"]),
            prompt_id=str(d["prompt_id"]),
            channel_id=str(d["channel_id"]),
            author_id=str(d["author_id"]),
            content=str(d.get("content") or ""),
            version=int(d["version"]),
            image_urls=tuple(d.get("image_urls") or ()),
            suggestions=tuple(d.get("suggestions") or ()),
            has_components=bool(d.get("has_components")),
        )


@dataclass(frozen=True, slots=True)
class ReplySnapshot:
    """Every reply message seen so far for one prompt, ordered by message id (snowflakes sort by time)."""

    prompt_id: str
    messages: tuple[ReplyMessage, ...] = ()

    @property
    def revision(self) -> tuple[tuple[str, int], ...]:
        """Changes whenever any part changes; the answering side waits for a new revision."""
        return tuple((m.message_id, m.version) for m in self.messages)

    @staticmethod
    def of(prompt_id: str, messages: list[ReplyMessage] | tuple[ReplyMessage, ...]) -> ReplySnapshot:
        ordered = sorted(messages, key=lambda m: int(m.message_id))
        return ReplySnapshot(prompt_id, tuple(ordered))


@dataclass(frozen=True, slots=True)
class TempChannel:
    """A `cdp-chat-*` channel created for one request; deleted at `delete_at` (epoch s), None = in use."""

    channel_id: str
    guild_id: str
    created_at: float
    delete_at: float | None = None
    request_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
