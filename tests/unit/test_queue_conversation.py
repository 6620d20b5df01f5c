"""The account queue inside the conversation use case: a lease is taken before anything is posted, given
back as soon as the reply is complete (before close(): a Lambda may freeze right after the answer), moved
to another account when Discord refuses the first, and a busy queue is a 429 with Retry-After."""

from __future__ import annotations

from cdp.adapters.store.leases import MemoryLeaseStore
from cdp.adapters.store.memory import MemoryHealthStore, MemoryReplyStore
from cdp.app.conversation import ChatSpec, ConversationService
from cdp.app.errors import ErrorKind, ServiceError
from cdp.app.pool import AccountPool
from cdp.app.queue import AccountQueue
from cdp.domain.discord import DiscordUnauthorized
from cdp.domain.model import ReplyMessage
from cdp.entry.openai import errors as oe
from cdp.settings import load_settings

BOT = "1300000000000000001"
GUILD = "1100000000000000001"
CHANNEL = "1200000000000000001"


class Rest:
    """Discord REST: the configured channel exists; user posts succeed except for refused tokens."""

    def __init__(self, refused: set[str] = frozenset()) -> None:
        self.refused = refused
        self.posts: list[tuple[str, str]] = []  # (token, content)

    async def get_channel(self, channel_id):
        return {"id": channel_id, "guild_id": GUILD, "type": 0}

    async def send_user_message(self, token, channel_id, content, *, nonce, allowed_user_ids, files=()):
        if token in self.refused:
            raise DiscordUnauthorized("401: Unauthorized", status=401)
        self.posts.append((token, content))
        return {"id": str(1400000000000000000 + len(self.posts))}


def service(rest, tokens="u.t1,u.t2", **kw):
    s = load_settings(BOT_TOKEN="b.t", USER_AUTHORIZATION=tokens, GUILD_ID=GUILD, COZE_BOT_ID=BOT,
                      CHANNEL_ID=CHANNEL, DEFAULT_CHANNEL_ENABLE=True, ACCOUNT_MIN_GAP=0, **kw)
    pool = AccountPool(s.user_tokens, MemoryHealthStore(), tz=s.TZ, reset_time=s.DAILY_RESET_TIME)
    leases = MemoryLeaseStore()
    svc = ConversationService(s, rest=rest, replies=MemoryReplyStore(), channels=None, pool=pool,
                              queue=AccountQueue(s, pool, leases))
    return svc, leases


def spec(n: int, key: str = "k1") -> ChatSpec:
    return ChatSpec(request_id=f"req_{n}", model="gpt-4o", messages=[{"role": "user", "content": f"hi {n}"}],
                    stream=False, api_key=key)


async def test_the_lease_is_given_back_when_the_reply_is_complete():
    rest = Rest()
    svc, leases = service(rest)
    conv = await svc.start(spec(1))
    assert leases.held(conv.account, 0) == 1
    await svc.replies.put(ReplyMessage("1500000000000000001", conv.prompt_message_id, CHANNEL, BOT, "hello",
                                       version=1, suggestions=("more",), has_components=True))
    last = await conv.result()
    assert last.decision.done and last.view.text == "hello"
    assert leases.held(conv.account, 0) == 0  # before close()
    conv.close()


async def test_an_account_refused_by_discord_hands_its_slot_over():
    rest = Rest(refused={"u.t1"})
    svc, leases = service(rest)
    conv = await svc.start(spec(2))
    assert [t for t, _ in rest.posts] == ["u.t2"]
    fps = svc.pool.fingerprints
    assert conv.account == fps[1] and leases.held(fps[0], 0) == 0 and leases.held(fps[1], 0) == 1
    await conv.aclose()
    assert leases.held(fps[1], 0) == 0


async def test_a_busy_queue_is_a_429_with_retry_after_and_nothing_posted():
    rest = Rest()
    svc, leases = service(rest, tokens="u.t1", QUEUE_MAX_WAIT=0)
    first = await svc.start(spec(3))
    try:
        await svc.start(spec(4, key="k2"))
        raise AssertionError("the second request got the busy account")
    except ServiceError as exc:
        assert exc.kind is ErrorKind.BUSY
        err = oe.from_service_error(exc)
    assert err.status == 429 and err.type == "requests" and int(err.headers["Retry-After"]) >= 1
    assert len(rest.posts) == 1
    await first.aclose()
    second = await svc.start(spec(5, key="k2"))  # free again
    assert len(rest.posts) == 2
    await second.aclose()


class StickyRest(Rest):
    """Also creates channels; posting into a channel in `gone` is Discord's 404 (deleted by hand)."""

    def __init__(self) -> None:
        super().__init__()
        self.gone: set[str] = set()
        self.created: list[str] = []

    async def create_channel(self, guild_id, name, type=0, parent_id=None, permission_overwrites=None):
        cid = str(1600000000000000000 + len(self.created))
        self.created.append(cid)
        return {"id": cid, "guild_id": guild_id, "type": 0, "name": name}

    async def send_user_message(self, token, channel_id, content, *, nonce, allowed_user_ids, files=()):
        if channel_id in self.gone:
            from cdp.domain.discord import DiscordNotFound

            raise DiscordNotFound("404: Unknown Channel", status=404, code=10003)
        return await super().send_user_message(token, channel_id, content, nonce=nonce,
                                               allowed_user_ids=allowed_user_ids)


async def test_a_sticky_restart_does_not_wait_for_its_own_lease():
    """One account, one prompt at a time: a sticky conversation whose channel was deleted starts again
    in a new channel within the same request (it gives its lease back first, else it would wait for
    itself until QUEUE_MAX_WAIT)."""
    from cdp.adapters.store.memory import MemoryChannelRegistry, MemoryConversationStore

    rest = StickyRest()
    s = load_settings(BOT_TOKEN="b.t", USER_AUTHORIZATION="u.t1", GUILD_ID=GUILD, COZE_BOT_ID=BOT,
                      ACCOUNT_MIN_GAP=0, QUEUE_MAX_WAIT=2, CONVERSATION_MODE="sticky", TEMP_CHANNEL_PRIVATE=False)
    pool = AccountPool(s.user_tokens, MemoryHealthStore(), tz=s.TZ, reset_time=s.DAILY_RESET_TIME)
    svc = ConversationService(s, rest=rest, replies=MemoryReplyStore(), channels=MemoryChannelRegistry(),
                              pool=pool, conversations=MemoryConversationStore(),
                              queue=AccountQueue(s, pool, MemoryLeaseStore()))
    first_turn = [{"role": "user", "content": "hello"}]
    conv = await svc.start(ChatSpec(request_id="req_s1", model="gpt-4o", messages=first_turn, stream=False))
    await svc.replies.put(ReplyMessage("1500000000000000001", conv.prompt_message_id, conv.channel_id, BOT,
                                       "hi there", version=1, suggestions=("more",), has_components=True))
    assert (await conv.result()).view.text == "hi there"
    await conv.aclose()
    rest.gone.add(conv.channel_id)  # deleted by hand
    history = [*first_turn, {"role": "assistant", "content": "hi there"}, {"role": "user", "content": "again"}]
    again = await svc.start(ChatSpec(request_id="req_s2", model="gpt-4o", messages=history, stream=False))
    assert again.channel_id != conv.channel_id and again.channel_id in rest.created
    await again.aclose()


async def test_a_reply_in_progress_renews_its_lease():
    """The conversation's updates keep the account's slot held past the lease's ttl (see
    tests/aws/test_leases.py for the store and queue side)."""
    rest = Rest()
    svc, leases = service(rest)
    clock = [1000.0]
    svc.queue.clock = lambda: clock[0]
    conv = await svc.start(spec(7))
    lease = conv.lease
    updates = conv.updates(heartbeat=0.01)
    await anext(updates)
    clock[0] += lease.ttl * 0.9  # well past half its ttl: the next update renews it
    await anext(updates)
    assert lease.renewed_at == clock[0]
    assert leases.held(conv.account, clock[0] + lease.ttl * 0.5) == 1  # held beyond the first expiry
    await updates.aclose()
    await conv.aclose()
