"""DynamoDB adapters against a moto server over HTTP, tables created from template.yaml."""

from __future__ import annotations

import asyncio
import time

import pytest
from cdp.adapters.store.dynamodb import STATS, DynamoChannelRegistry, DynamoReplyStore
from cdp.adapters.store.dynamodb import rhythm as rh
from cdp.adapters.store.dynamodb.replies import reply_item
from cdp.adapters.store.dynamodb.rhythm import Rhythm
from cdp.domain.model import ReplyMessage, TempChannel
from cdp.settings import Settings

from tests.support.aws import store_settings


def msg(mid: str, prompt: str = "900000000000000001", content: str = "hi", version: int = 1, **kw):
    return ReplyMessage(message_id=mid, prompt_id=prompt, channel_id="800000000000000001",
                        author_id="1300000000000000001", content=content, version=version, **kw)


@pytest.fixture
def store(moto, tables):
    return DynamoReplyStore(store_settings(moto, tables))


@pytest.fixture
def registry(moto, tables):
    return DynamoChannelRegistry(store_settings(moto, tables))


def test_tables_from_template_have_stream_and_ttl(moto, tables):
    _, names = tables
    client = moto.client()
    desc = client.describe_table(TableName=names["replies"])["Table"]
    assert desc["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
    assert desc["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    for name in names.values():
        ttl = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        assert ttl["AttributeName"] == "expires_at" and ttl["TimeToLiveStatus"] == "ENABLED"


def test_settings_names_and_endpoint(monkeypatch):
    monkeypatch.setenv("CDP_TABLE_PREFIX", "prod")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://localhost:8000")
    monkeypatch.delenv("CDP_REPLIES_TABLE", raising=False)
    monkeypatch.setenv("CDP_STATE_TABLE", "explicit-state")
    c = Settings(_env_file=None)
    assert c.replies_table == "prod-replies" and c.state_table == "explicit-state"
    assert c.dynamodb_endpoint == "http://localhost:8000"
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://ddb:9000")
    assert Settings(_env_file=None).dynamodb_endpoint == "http://ddb:9000"


async def test_put_snapshot_roundtrip_ordered_by_id(store):
    p = "900000000000000101"
    await store.put(msg("1000000000000000020", p, "second", 5, image_urls=("https://x/a.png",)))
    await store.put(msg("1000000000000000009", p, "first", 3, suggestions=("More?",), has_components=True))
    snap = await store.snapshot(p)
    assert [m.content for m in snap.messages] == ["first", "second"]
    assert snap.messages[0].suggestions == ("More?",) and snap.messages[0].has_components
    assert snap.messages[1].image_urls == ("https://x/a.png",)
    assert (await store.snapshot("900000000000000999")).messages == ()


async def test_versions_never_go_backwards_even_across_two_listeners(moto, tables, store):
    p = "900000000000000201"
    other = DynamoReplyStore(store_settings(moto, tables))  # a second listener: its own process caches
    assert await store.put(msg("1000000000000000030", p, "v2 text", 2))
    assert not await other.put(msg("1000000000000000030", p, "v1 text", 1))  # late, older edit
    assert await other.put(msg("1000000000000000030", p, "v2 text", 2))  # duplicate: harmless
    assert not await store.put(msg("1000000000000000030", p, "v1 text", 1))
    assert await other.put(msg("1000000000000000030", p, "v3 text", 3))
    snap = await store.snapshot(p)
    assert [(m.content, m.version) for m in snap.messages] == [("v3 text", 3)]


async def test_prompt_for_reply_survives_a_fresh_process(moto, tables, store):
    await store.put(msg("1000000000000000040", "900000000000000301"))
    fresh = DynamoReplyStore(store_settings(moto, tables))
    assert await fresh.prompt_for_reply("1000000000000000040") == "900000000000000301"
    assert await fresh.prompt_for_reply("1000000000000000041") is None


async def test_every_item_has_a_ttl(moto, tables, store):
    _, names = tables
    await store.put(msg("1000000000000000050", "900000000000000401"))
    items = moto.client().scan(TableName=names["replies"])["Items"]
    mine = [i for i in items if "1000000000000000050" in (i["pk"]["S"] + i["sk"]["S"])]
    assert len(mine) == 2  # the part and its reply# pointer
    now = time.time()
    for item in mine:
        assert now + 3600 < float(item["expires_at"]["N"]) <= now + 24 * 3600 + 5  # CDP_REPLY_TTL_SECONDS


async def test_wait_for_change_wakes_on_a_write_from_another_process(moto, tables, store):
    p = "900000000000000501"
    writer = DynamoReplyStore(store_settings(moto, tables))

    async def later():
        await asyncio.sleep(0.3)
        await writer.put(msg("1000000000000000060", p, "hello", 1))

    task = asyncio.create_task(later())
    t0 = time.monotonic()
    snap = await store.wait_for_change(p, (), timeout=5)
    elapsed = time.monotonic() - t0
    await task
    assert [m.content for m in snap.messages] == ["hello"]
    assert elapsed < 1.5


async def test_wait_for_change_returns_by_the_timeout(store):
    p = "900000000000000601"
    t0 = time.monotonic()
    snap = await store.wait_for_change(p, (), timeout=0.5)
    elapsed = time.monotonic() - t0
    assert snap.messages == () and 0.45 <= elapsed < 1.0
    t0 = time.monotonic()
    await store.wait_for_change(p, (), timeout=0)
    assert time.monotonic() - t0 < 0.5


async def test_wait_for_change_returns_at_once_when_revision_differs(store):
    p = "900000000000000701"
    await store.put(msg("1000000000000000070", p, "x", 4))
    t0 = time.monotonic()
    snap = await store.wait_for_change(p, (), timeout=5)
    assert snap.revision == (("1000000000000000070", 4),) and time.monotonic() - t0 < 0.5


def test_rhythm_before_the_first_reply_polls_at_the_think_pace():
    r = Rhythm(since=100.0)
    assert r.delay(100.0) == rh.THINK  # the first token waits about THINK/2 for a read
    assert r.delay(100.0 + rh.THINK_LONG_AFTER + 1) == rh.THINK_LONG
    r.observe(None, 101.0)  # a read that found nothing changes nothing
    assert r.last_write is None and r.delay(101.0) == rh.THINK


def test_rhythm_sleeps_until_the_next_expected_edit_then_reads_fast():
    r = Rhythm(since=0.0)
    for t in (10.0, 11.0, 12.0):  # the listener wrote an edit every second
        r.observe(t, t + 0.05)
    assert r.pace == pytest.approx(1.0) and r.last_write == 12.0
    expected = 12.0 + 1.0 + rh.AFTER
    assert r.delay(12.6) == pytest.approx(expected - 12.6)  # no read in between
    assert r.delay(12.06) == rh.QUIET  # never sleeps longer than QUIET at a time
    assert r.delay(expected - rh.FAST / 2) == rh.FAST  # the edit is due: read fast
    assert r.delay(expected + 0.5) == rh.FAST
    overdue = [r.delay(expected + 1.0 + s) for s in (0.1, 0.5, 1.0, 5.0)]  # Coze paused, or it is over
    assert overdue == sorted(overdue) and rh.FAST < overdue[0] and overdue[-1] == rh.SLOW


def test_rhythm_pace_follows_the_edits_and_is_bounded():
    r = Rhythm(since=0.0)
    r.observe(10.0, 10.0)
    assert r.pace is None and r.delay(10.0) == pytest.approx(rh.PACE_UNKNOWN + rh.AFTER)
    r.observe(10.1, 10.2)
    assert r.pace == pytest.approx(0.1)
    r.observe(10.1, 10.3)  # the same write seen again: no gap
    assert r.pace == pytest.approx(0.1)
    r.observe(100.0, 100.0)  # a long pause weighs at most PACE_MAX
    assert r.pace == pytest.approx((0.1 + rh.PACE_MAX) / 2)


def test_rhythm_clamps_a_write_stamped_in_the_future():
    r = Rhythm(since=0.0)
    r.observe(50.0, 20.0)  # the listener's clock runs ahead: the write happened by the time it was seen
    assert r.last_write == 20.0


async def test_wait_for_change_learns_the_listeners_pace_from_updated_at(moto, tables, store):
    p = "900000000000000551"
    client = moto.client()
    for mid, version, written in (("1000000000000000055", 1, 1000.0), ("1000000000000000056", 1, 1000.5)):
        item = reply_item(msg(mid, p, "x", version), 2_000_000_000)
        item["updated_at"] = {"N": str(written)}
        client.put_item(TableName=store.table, Item=item)
        await store.wait_for_change(p, (), timeout=1)
    r = store.rhythm(p)
    assert r.last_write == 1000.5 and r.pace == pytest.approx(0.5)


async def test_concurrent_edits_of_one_message_write_the_newest_and_skip_superseded_ones(store):
    """Five edits of one message arrive at once (the listener records events concurrently): the
    first is written, the three that waited behind it are moot, the newest is written."""
    from cdp.adapters.discord.recorder import ReplyRecorder

    coze, p, mid = "1300000000000000001", "900000000000000851", "1000000000000000085"
    recorder = ReplyRecorder(store, {coze})

    def edit(v: int) -> dict:
        return {"id": mid, "channel_id": "1100000000000000002", "author": {"id": coze, "bot": True},
                "content": f"v{v}", "timestamp": "2026-01-01T00:00:00.000000+00:00",
                "edited_timestamp": f"2026-01-01T00:00:{v:02d}.000000+00:00" if v > 1 else None,
                "embeds": [], "attachments": [], "components": [],
                "message_reference": {"message_id": p, "channel_id": "1100000000000000002"}}

    before = STATS.snapshot()
    await asyncio.gather(*(recorder.on_message_update(edit(v)) for v in range(1, 6)))
    assert (recorder.recorded, recorder.superseded) == (2, 3)  # v2..v4 waited behind v1, then were moot
    assert STATS.writes - before["writes"] == 3  # v1 + its pointer (in parallel), then v5
    snap = await store.snapshot(p)
    assert [m.content for m in snap.messages] == ["v5"]
    assert await store.put(msg(mid, p, "v3", 3)) is False  # older than what is stored


async def test_counters_count_reads_and_writes(store):
    before = STATS.snapshot()
    await store.put(msg("1000000000000000080", "900000000000000801"))
    await store.snapshot("900000000000000801")
    after = STATS.snapshot()
    assert after["writes"] - before["writes"] == 2  # part + pointer (first time only)
    assert after["reads"] - before["reads"] == 1
    await store.put(msg("1000000000000000080", "900000000000000801", "more", 2))
    assert STATS.writes - after["writes"] == 1  # pointer already known


async def test_channel_registry(registry):
    now = time.time()
    a = TempChannel("700000000000000001", "1100000000000000001", now - 10, None, "req_a", {"k": "v"})
    b = TempChannel("700000000000000002", "1100000000000000001", now - 5000, None, "req_b")
    c = TempChannel("700000000000000003", "1100000000000000001", now, None, "req_c")
    for ch in (a, b, c):
        await registry.add(ch)
    assert {ch.channel_id for ch in await registry.all()} >= {a.channel_id, b.channel_id, c.channel_id}
    got = {ch.channel_id: ch for ch in await registry.all()}
    assert got[a.channel_id].extra == {"k": "v"} and got[a.channel_id].request_id == "req_a"
    assert got[a.channel_id].delete_at is None

    await registry.schedule_delete(a.channel_id, now - 1)
    await registry.schedule_delete("700000000000000999", now - 1)  # unknown: nothing happens
    assert not await registry.schedule_delete_if_in_use(a.channel_id, now + 100)  # already scheduled
    assert await registry.schedule_delete_if_in_use(c.channel_id, now + 100)
    due = {ch.channel_id for ch in await registry.due(now, stale_before=now - 960)}
    assert due == {a.channel_id, b.channel_id}  # a: due; b: in use but stale; c: scheduled later
    assert "700000000000000999" not in {ch.channel_id for ch in await registry.all()}

    await registry.remove(a.channel_id)
    await registry.remove(a.channel_id)  # idempotent
    assert a.channel_id not in {ch.channel_id for ch in await registry.all()}


async def test_dynamodb_stores_via_bootstrap(aws_env):
    from cdp.entry.bootstrap import make_stores
    from cdp.settings import load_settings

    stores = make_stores(load_settings(CDP_STORE="dynamodb"))
    assert isinstance(stores.replies, DynamoReplyStore)
    assert isinstance(stores.channels, DynamoChannelRegistry)
    await stores.replies.put(msg("1000000000000000090", "900000000000000901"))
    assert len((await stores.replies.snapshot("900000000000000901")).messages) == 1


async def test_writes_of_one_reply_keep_their_order_across_its_messages(moto, tables):
    """A later message of a reply (Coze's part 2) is never stored before an earlier message's edit
    the listener received first: a reader would see part 2 after an unfinished part 1. The order is
    the recorder's per-prompt lane; this checks it holds on DynamoDB, whose writes run concurrently."""
    from cdp.adapters.discord.recorder import ReplyRecorder

    real = DynamoReplyStore(store_settings(moto, tables)).client
    log: list[str] = []

    class SlowFirstWrite:
        """The first reply write takes a while (a slow DynamoDB call): the next must wait for it."""

        def put_item(self, **kw):
            sk = kw["Item"]["sk"]["S"]
            if sk != "prompt":
                log.append(f"start {sk}")
                if len(log) == 1:
                    time.sleep(0.3)
            try:
                return real.put_item(**kw)
            finally:
                if sk != "prompt":
                    log.append(f"end {sk}")

        def __getattr__(self, name):
            return getattr(real, name)

    store = DynamoReplyStore(store_settings(moto, tables), client=SlowFirstWrite())
    coze, p = "1300000000000000001", "900000000000000951"
    recorder = ReplyRecorder(store, {coze})

    def created(mid: str, content: str, second: int) -> dict:
        return {"id": mid, "channel_id": "1100000000000000002", "author": {"id": coze, "bot": True},
                "content": content, "timestamp": f"2026-01-01T00:00:{second:02d}.000000+00:00",
                "edited_timestamp": None, "embeds": [], "attachments": [], "components": [],
                "message_reference": {"message_id": p, "channel_id": "1100000000000000002"}}

    await asyncio.gather(recorder.on_message_create(created("1000000000000000095", "part 1, done", 1)),
                         recorder.on_message_create(created("1000000000000000096", "part 2", 2)))
    assert log == ["start 1000000000000000095", "end 1000000000000000095",
                   "start 1000000000000000096", "end 1000000000000000096"]
    assert [m.content for m in (await store.snapshot(p)).messages] == ["part 1, done", "part 2"]
