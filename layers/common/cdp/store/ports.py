"""Ports for every piece of state. The service and listener depend on these, never on an adapter."""

from __future__ import annotations

from typing import Protocol

from cdp.domain.model import ReplyMessage, ReplySnapshot, TempChannel


class ReplyStore(Protocol):
    """Coze replies keyed by the prompt message id. Written by the listener, read by the answering side."""

    async def put(self, message: ReplyMessage) -> bool:
        """Store `message` unless a newer version of it is already stored. Returns True if written.

        Idempotent: equal versions overwrite (same data), older versions are ignored, so duplicate,
        reordered and doubled (two listeners) events are harmless.
        """
        ...

    async def prompt_for_reply(self, message_id: str) -> str | None:
        """Prompt id that reply message `message_id` belongs to (partial MESSAGE_UPDATEs omit it)."""
        ...

    async def snapshot(self, prompt_id: str) -> ReplySnapshot: ...

    async def wait_for_change(self, prompt_id: str, revision: tuple, timeout: float) -> ReplySnapshot:
        """Return as soon as the snapshot's revision differs from `revision`, or after `timeout` seconds."""
        ...


class ChannelRegistry(Protocol):
    """Temporary channels, so a crash or restart never orphans one."""

    async def add(self, channel: TempChannel) -> None: ...

    async def schedule_delete(self, channel_id: str, delete_at: float) -> None: ...

    async def due(self, now: float, stale_before: float) -> list[TempChannel]:
        """Channels whose delete_at has passed, and in-use ones created before `stale_before`
        (a request that never ended: crashed process, cancelled stream)."""
        ...

    async def remove(self, channel_id: str) -> None: ...

    async def all(self) -> list[TempChannel]: ...


class ListenerPresence(Protocol):
    """Whether the gateway listener is connected, so idle completion is never decided on a gap."""

    async def stable_since(self) -> float | None:
        """Epoch seconds since the listener has been continuously connected; None while it is not."""
        ...
