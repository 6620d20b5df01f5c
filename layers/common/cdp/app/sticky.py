"""Sticky conversations (CONVERSATION_MODE=sticky): a conversation continues in its own channel.

A request is the next turn of a conversation when its history (the messages before the new user
turn) hashes to the fingerprint stored after the proxy's last answer, or when the client names the
conversation (`x-conversation-id` header, `user` field) and the history matches or is empty. Then only
the new user turn is posted into the conversation's channel, so Coze keeps its own memory. Any other
history (edited, regenerated) goes to a fresh channel with the full history, as in "fresh" mode.

Channel lifetime: a sticky channel is registered like every temporary channel, with its deletion
postponed to CONVERSATION_IDLE_TTL after its last answer (plus a small margin); the cleanup job
deletes it then, in both topologies, also after a crash. The store's record expires a little before,
so a conversation is never continued into a channel about to go. Before a new sticky channel is
created, when CONVERSATION_CHANNEL_BUDGET temporary channels exist, the least recently used idle
sticky conversations are released first.

One request at a time per conversation: the request leases it in the store (an atomic conditional
write); a second one meanwhile is refused with a clear 503 `conversation_busy` and a Retry-After.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from cdp.app import errors as se
from cdp.app.channels import ChannelKeeper
from cdp.domain.sticky import (
    StickyConversation,
    Turn,
    answered_fingerprint,
    history_fingerprint,
    least_recently_used,
    named_key,
    split_turn,
)
from cdp.ports import ConversationStore
from cdp.settings import Settings

log = logging.getLogger("cdp.app.sticky")

LEASE_MARGIN_SECONDS = 30.0  # a lease outlives its request's timeout by this much (then it lapses)
MAX_RETRY_AFTER = 60


def deletion_margin(ttl: float) -> float:
    """How long after its record expires a sticky channel is deleted: a request that found the record
    alive just before has time to postpone the deletion."""
    return min(5.0, ttl / 4)


@dataclass
class StickyTurn:
    """One request of a sticky conversation: continuing one (`conversation` set: post only the new
    turn into its channel) or opening one (a fresh channel, the full history)."""

    spec_request_id: str
    api_key: str | None
    model: str
    turn: Turn
    named: str | None  # the named conversation's key, or None (recognised by history)
    lease_until: float
    conversation: StickyConversation | None = None  # leased: this request continues it
    channel_id: str = ""
    coze_bot_id: str = ""
    _finished: bool = field(default=False, repr=False)

    @property
    def continuing(self) -> bool:
        return self.conversation is not None

    @property
    def messages(self) -> list[dict]:
        """The request's whole messages: history and new turn."""
        return [*self.turn.history, self.turn.new]


class StickyConversations:
    def __init__(self, settings: Settings, store: ConversationStore, keeper: ChannelKeeper, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.store = store
        self.keeper = keeper
        self.clock = clock

    @property
    def ttl(self) -> float:
        return self.settings.CONVERSATION_IDLE_TTL

    async def begin(self, *, request_id: str, api_key: str | None, model: str, messages: list[dict],
                    name: str | None, coze_bot_id: str, request_seconds: float) -> StickyTurn | None:
        """The sticky turn of this request, leased when it continues a conversation; None when the request
        does not end with a user message (answered like in "fresh" mode). Raises ServiceError
        (conversation_busy) while another request answers in the same conversation."""
        turn = split_turn(messages)
        if turn is None:
            return None
        now = self.clock()
        lease_until = now + request_seconds + LEASE_MARGIN_SECONDS
        named = named_key(name, api_key, model) if name else None
        st = StickyTurn(request_id, api_key, model, turn, named, lease_until)
        key = named or (history_fingerprint(turn.history, api_key, model) if turn.is_dialog else None)
        if key is None:
            return st
        found = await self.store.get(key)
        if found is None or found.expired(now):
            return st
        if found.leased(now):
            raise self._busy(found, now)
        matches = (found.coze_bot_id == coze_bot_id and (
            named is None or not turn.is_dialog
            or found.fingerprint == history_fingerprint(turn.history, api_key, model)))
        leased = await self.store.lease(key, request_id, now, lease_until)
        if leased is None:  # another request leased it in between (or it just expired)
            again = await self.store.get(key)
            if again is not None and again.leased(now):
                raise self._busy(again, now)
            return st
        if not matches:  # a named conversation whose history was edited: it starts again
            log.info("sticky conversation edited; starting a new channel", extra={"request_id": request_id})
            await self.release(leased)
            return st
        st.conversation = leased
        st.channel_id, st.coze_bot_id = leased.channel_id, leased.coze_bot_id
        await self.keeper.postpone(leased.channel_id, lease_until + self.ttl + deletion_margin(self.ttl))
        log.info("sticky conversation continued", extra={"request_id": request_id,
                                                         "channel_id": leased.channel_id})
        return st

    def _busy(self, found: StickyConversation, now: float) -> se.ServiceError:
        wait = max(1, min(MAX_RETRY_AFTER, int(found.lease_until - now) + 1))
        return se.unavailable("Another request of this conversation is being answered; a conversation "
                              "answers one request at a time. Retry when it is done.", wait,
                              code="conversation_busy")

    async def make_room(self) -> None:
        """Before a new sticky channel: while CONVERSATION_CHANNEL_BUDGET temporary channels exist,
        release the least recently used idle sticky conversation (expired ones first)."""
        budget = self.settings.CONVERSATION_CHANNEL_BUDGET
        registered = len(await self.keeper.registry.all())
        if registered < budget:
            return
        now = self.clock()
        for conv in least_recently_used(await self.store.all(), now):
            if registered < budget:
                return
            log.info("channel budget reached; releasing the least recently used sticky conversation",
                     extra={"channel_id": conv.channel_id, "budget": budget})
            await self.release(conv)
            registered -= 1
        if registered >= budget:
            log.warning("channel budget reached and no idle sticky conversation to release",
                        extra={"budget": budget, "registered": registered})

    async def release(self, conv: StickyConversation) -> None:
        """Forget a conversation and delete its channel now."""
        await self.store.delete(conv.key)
        await self.keeper.delete(conv.channel_id)

    async def opened(self, st: StickyTurn, channel_id: str, coze_bot_id: str) -> None:
        """A new channel was created for this turn: its deletion is postponed like a sticky channel's,
        and a named conversation is leased at once (a second request with that name is refused)."""
        st.channel_id, st.coze_bot_id = channel_id, coze_bot_id
        await self.keeper.postpone(channel_id, st.lease_until + self.ttl + deletion_margin(self.ttl))
        if st.named is not None:
            now = self.clock()
            st.conversation = None
            await self.store.put(StickyConversation(st.named, channel_id, coze_bot_id, "", now,
                                                    st.lease_until + self.ttl, st.spec_request_id,
                                                    st.lease_until))

    async def abandon(self, st: StickyTurn) -> None:
        """Nothing was posted (the request was refused before): lift the lease, the conversation stays."""
        if st.conversation is None:
            return
        try:
            await self.store.put(replace(st.conversation, lease_owner="", lease_until=0.0))
        except Exception:
            log.warning("could not lift a sticky conversation's lease; it lapses by itself", exc_info=True,
                        extra={"request_id": st.spec_request_id})

    async def finish(self, st: StickyTurn, answer: str | None) -> None:
        """The request ended: with `answer` (the text the client got) the conversation is stored under
        its new fingerprint, idle, its channel kept CONVERSATION_IDLE_TTL more; without one (failure,
        client gone) it is forgotten and its channel released as in "fresh" mode. Never raises."""
        if st._finished or not st.channel_id:
            return
        st._finished = True
        old_key = st.conversation.key if st.conversation is not None else st.named
        try:
            if answer is None:
                if old_key is not None:
                    await self.store.delete(old_key, owner=st.spec_request_id)
                await self.keeper.schedule_delete(st.channel_id)
                return
            now = self.clock()
            fp = answered_fingerprint(st.messages, answer, st.api_key, st.model)
            key = st.named or fp
            await self.store.put(StickyConversation(key, st.channel_id, st.coze_bot_id, fp, now, now + self.ttl))
            if old_key is not None and old_key != key:
                await self.store.delete(old_key, owner=st.spec_request_id)
            await self.keeper.postpone(st.channel_id, now + self.ttl + deletion_margin(self.ttl))
        except Exception:
            log.warning("could not record the sticky conversation; its channel is deleted by the cleanup "
                        "job when its time comes", exc_info=True,
                        extra={"request_id": st.spec_request_id, "channel_id": st.channel_id})
