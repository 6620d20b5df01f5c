"""A reply's ending (Coze's buttons, an error text) is trusted only once the listener missed nothing
of it. After a fresh gateway session (op 9 not resumable, a restart) the messages sent in the gap
come back through REST; until the listener says it is recording again, an ending seen on the last
message alone must not finish the request with the first messages missing (found by the fault run:
a long reply answered with only its third Discord message)."""

from __future__ import annotations

import asyncio

from cdp.adapters.discord.gateway import GatewayStatus
from cdp.adapters.store.memory import MemoryHealthStore, MemoryReplyStore
from cdp.app.conversation import ChatSpec, Conversation, ConversationService
from cdp.app.pool import AccountPool
from cdp.domain.model import ReplyMessage
from cdp.entry.bootstrap import StatusPresence
from cdp.settings import load_settings

BOT, PROMPT, CHANNEL = "1300000000000000001", "1400000000000000001", "1200000000000000001"
PARTS = ["First part, ", "second part, ", "third part."]


def message(i: int, buttons: bool = False) -> ReplyMessage:
    return ReplyMessage(message_id=str(1400000000000000010 + i), prompt_id=PROMPT, channel_id=CHANNEL,
                        author_id=BOT, content=PARTS[i], version=1_000_000 + i, has_components=buttons,
                        suggestions=("More?",) if buttons else ())


def conversation(replies: MemoryReplyStore, status: GatewayStatus) -> Conversation:
    s = load_settings(BOT_TOKEN="b.t", USER_AUTHORIZATION="u.t", GUILD_ID="1100000000000000001",
                      COZE_BOT_ID=BOT, REQUEST_OUT_TIME="30")
    pool = AccountPool(s.user_tokens, MemoryHealthStore(), tz=s.TZ, reset_time=s.DAILY_RESET_TIME)
    service = ConversationService(s, rest=None, replies=replies, channels=None, pool=pool,
                                  presence=StatusPresence(status))
    spec = ChatSpec(request_id="req_t", model="gpt-4o", messages=[], stream=False)
    return Conversation(spec, "prompt", None, PROMPT, CHANNEL, False, service)


def ready_status(ready_count: int, recovered: int) -> GatewayStatus:
    status = GatewayStatus()
    status.set("ready")
    status.ready_count = ready_count
    if recovered:
        status.recovered(recovered)
    return status


async def test_an_ending_waits_for_the_recovery_of_a_fresh_session():
    replies = MemoryReplyStore()
    status = ready_status(ready_count=2, recovered=1)  # session 2 is new: its gap not yet re-read
    conv = conversation(replies, status)
    await replies.put(message(2, buttons=True))  # only the last message came through the gateway
    result = asyncio.create_task(conv.result())
    await asyncio.sleep(0.6)
    assert not result.done()  # not answered with "third part." alone
    for i in (0, 1):  # the recovery re-reads the gap...
        await replies.put(message(i))
    status.recovered(2)  # ...then says so
    last = await asyncio.wait_for(result, 5)
    assert last.decision.done and last.decision.reason == "buttons"
    assert last.view.text == "".join(PARTS)


async def test_a_recording_listener_ends_a_reply_at_once():
    replies = MemoryReplyStore()
    status = ready_status(ready_count=1, recovered=1)
    conv = conversation(replies, status)
    for i in range(3):
        await replies.put(message(i, buttons=i == 2))
    last = await asyncio.wait_for(conv.result(), 5)
    assert last.view.text == "".join(PARTS) and last.decision.reason == "buttons"


def test_recording_needs_the_recovery_of_every_fresh_session():
    status = GatewayStatus()
    assert not status.recording
    status.set("ready")
    status.ready_count = 1
    assert not status.recording  # the first session: what arrived before it is re-read first
    status.recovered(1)
    assert status.recording and status.recording_since >= status.since
    status.ready_count = 2  # op 9 false: a new session
    assert not status.recording
    status.recovered(2)
    assert status.recording


async def test_a_held_ending_keeps_the_heartbeats_and_the_client_gone_check():
    """While an ending waits for the listener, the client-gone check still runs (a client that left
    frees its channel), and streams still get their keep-alive pings."""
    replies = MemoryReplyStore()
    status = ready_status(ready_count=2, recovered=1)
    conv = conversation(replies, status)
    await replies.put(message(2, buttons=True))
    asked = 0

    async def gone() -> bool:
        nonlocal asked
        asked += 1
        return asked >= 2

    assert await asyncio.wait_for(conv.result(client_gone=gone, check_every=0.2), 5) is None
    beats = []
    async for progress in conv.updates(heartbeat=0.2):
        beats.append(progress)
        if len(beats) == 3:
            break
    assert [p.decision.done for p in beats] == [False, False, False]


class ListRecorder:
    """A recorder that keeps the events it is given, in order."""

    health = None

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def on_message_create(self, payload: dict) -> None:
        self.seen.append(payload["id"])

    on_message_update = on_message_create


async def test_a_fresh_sessions_events_wait_for_the_recovery_of_its_gap():
    """The other half: the listener records nothing of a fresh session until the REST recovery of the
    gap is in the store, so a reply's earlier messages are written before its later ones."""
    from cdp.adapters.discord.gateway import DiscordListener

    recorder = ListRecorder()
    listener = DiscordListener(api_base="http://127.0.0.1:9/api/v10", bot_token="b.t", recorder=recorder)
    listener.holds_for_recovery = True
    status = listener.status
    status.set("ready")
    status.ready_count = 1
    consumer = asyncio.create_task(listener._consume())
    try:
        listener._queue.put_nowait(("MESSAGE_CREATE", {"id": "3"}))  # the last message, after READY
        await asyncio.sleep(0.2)
        assert recorder.seen == []  # held
        await recorder.on_message_create({"id": "1"})  # the recovery writes the gap...
        status.recovered(1)  # ...and says it is over
        for _ in range(50):
            if len(recorder.seen) == 2:
                break
            await asyncio.sleep(0.02)
        assert recorder.seen == ["1", "3"]
        listener.holds_for_recovery = False  # an entry point without recoveries never holds
        status.ready_count = 2
        listener._queue.put_nowait(("MESSAGE_UPDATE", {"id": "4"}))
        for _ in range(50):
            if len(recorder.seen) == 3:
                break
            await asyncio.sleep(0.02)
        assert recorder.seen == ["1", "3", "4"]
    finally:
        consumer.cancel()
