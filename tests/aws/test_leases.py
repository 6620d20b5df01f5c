"""Account leases (ACCOUNT_MAX_CONCURRENT, ACCOUNT_MIN_GAP) in the memory store and in DynamoDB (moto):
the same contract, and with DynamoDB the limits hold across processes (several queues = several Lambda
instances, each with its own store object) racing for the same accounts."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from cdp.adapters.store.dynamodb.leases import DynamoLeaseStore
from cdp.adapters.store.leases import MemoryLeaseStore
from cdp.adapters.store.memory import MemoryHealthStore
from cdp.app.errors import ErrorKind, ServiceError
from cdp.app.pool import AccountPool
from cdp.app.queue import AccountQueue
from cdp.settings import Settings

from tests.support.aws import store_settings


@pytest.fixture(params=["memory", "dynamodb"])
def leases(request, moto, tables):
    """A factory of lease stores sharing one state (dynamodb: a new object = another process)."""
    if request.param == "memory":
        shared = MemoryLeaseStore()
        return lambda: shared
    c = store_settings(moto, tables)
    # moto answers one request at a time (tests/support/moto_serial.py): its conditional writes are
    # atomic, as DynamoDB's, and the stores' read → decide → conditional write is what is tested
    return lambda: DynamoLeaseStore(c)


def uniq(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


async def test_slots_gap_release_and_expiry(leases):
    """Times are a second or more apart: the DynamoDB store dates a take at its read's answer."""
    a, b = leases(), leases()
    acct = uniq("fp")
    kw = {"max_concurrent": 2, "min_gap": 5.0, "ttl": 100.0}
    assert (await a.take(acct, "r1", 1000.0, **kw)).slot == 0
    d = await b.take(acct, "r2", 1001.0, **kw)  # a slot is free but the gap is not over
    assert d.slot is None and d.retry_in == pytest.approx(4.0, abs=0.5)
    assert (await b.take(acct, "r2", 1006.0, **kw)).slot == 1
    d = await a.take(acct, "r3", 1012.0, **kw)  # both slots held: until r1's expires
    assert d.slot is None and d.retry_in == pytest.approx(88.0, abs=0.5)
    await a.release(acct, 0, "someone-else")  # not the holder: nothing happens
    assert (await a.take(acct, "r3", 1012.0, **kw)).slot is None
    await a.release(acct, 0, "r1")
    took = await b.take(acct, "r3", 1012.0, **kw)
    assert took.slot == 0 and took.at >= 1012.0
    # r2 crashed and never released: its slot expires with its ttl
    assert (await a.take(acct, "r4", 1104.0, **kw)).slot is None
    assert (await a.take(acct, "r4", 1108.0, **kw)).slot == 1
    await b.release(acct, 1, "r2")  # the crashed holder coming back late frees nothing: r4 keeps slot 1
    await a.release(acct, 0, "r3")
    assert (await a.take(acct, "r5", 1111.0, **kw)).slot is None  # the gap since r4's post
    assert (await a.take(acct, "r5", 1114.0, **kw)).slot == 0
    assert (await b.take(acct, "r6", 1120.0, **kw)).slot is None


async def test_racing_takes_grant_one_slot(leases):
    acct = uniq("fp")
    stores = [leases() for _ in range(6)]
    got = await asyncio.gather(*[s.take(acct, f"r{i}", 500.0, max_concurrent=1, min_gap=0, ttl=60)
                                 for i, s in enumerate(stores)])
    assert sum(d.slot is not None for d in got) == 1


@pytest.mark.parametrize("instances", [4])
async def test_queues_of_several_instances_keep_each_account_within_its_limits(leases, instances):
    """4 instances, 3 accounts, 36 requests with holds of 50 ms: at no time does an account hold more
    than one prompt, two posts of an account are ACCOUNT_MIN_GAP apart, and everyone is served."""
    tokens = [uniq(f"token-{i}-xxxxxxxx") for i in range(3)]
    health = MemoryHealthStore()  # health is not under test; one shared store as in DynamoDB
    s = Settings(ACCOUNT_MAX_CONCURRENT=1, ACCOUNT_MIN_GAP=0.1, QUEUE_MAX_WAIT=30, QUEUE_MAX_SIZE=100)
    queues = [AccountQueue(s, AccountPool(tokens, health, tz="UTC", reset_time="00:00"), leases())
              for _ in range(instances)]
    timeline: list[tuple[str, float, float]] = []  # account, start, end

    async def request(i: int) -> None:
        q = queues[i % instances]
        lease = q.lease(f"key{i % 2}", f"req{i}", 20)
        _, fp = await lease.acquire()
        start = lease.taken_at  # the time the store recorded as the post
        await asyncio.sleep(0.05)
        end = time.time()
        timeline.append((fp, start, end))
        await lease.release()

    await asyncio.gather(*[request(i) for i in range(36)])
    assert len(timeline) == 36
    for fp in {t[0] for t in timeline}:
        spans = sorted((a, b) for f, a, b in timeline if f == fp)
        for (a0, b0), (a1, _) in zip(spans, spans[1:], strict=False):
            assert a1 >= b0, f"account {fp} held two prompts at once"
            assert a1 - a0 >= 0.1 - 0.01, f"account {fp} posted twice within ACCOUNT_MIN_GAP"
    assert len({t[0] for t in timeline}) == 3  # every account took its share


async def test_a_waiter_is_refused_with_retry_after_at_the_bound(leases):
    tokens = [uniq("token-only-xxxxxxxx")]
    s = Settings(ACCOUNT_MAX_CONCURRENT=1, ACCOUNT_MIN_GAP=0, QUEUE_MAX_WAIT=0.3, QUEUE_MAX_SIZE=100)
    q = AccountQueue(s, AccountPool(tokens, MemoryHealthStore(), tz="UTC", reset_time="00:00"), leases())
    held = q.lease("k", "r1", 20)
    await held.acquire()
    waiter = q.lease("k", "r2", 20)
    with pytest.raises(ServiceError) as info:
        await waiter.acquire()
    err = info.value
    assert err.kind is ErrorKind.BUSY and err.code == "queue_wait_exceeded" and err.retry_after >= 1
    assert q.waiting == 0 and not waiter.account
    await held.release()
    assert (await waiter.acquire())[1] == held.queue.pool.fingerprints[0]


async def test_newcomers_are_refused_at_once_when_the_queue_is_full_or_too_slow():
    tokens = ["token-one-xxxxxxxxxxxx"]
    s = Settings(ACCOUNT_MAX_CONCURRENT=1, ACCOUNT_MIN_GAP=0, QUEUE_MAX_WAIT=30, QUEUE_MAX_SIZE=2)
    q = AccountQueue(s, AccountPool(tokens, MemoryHealthStore(), tz="UTC", reset_time="00:00"),
                     MemoryLeaseStore())
    held = q.lease("a", "r0", 20)
    await held.acquire()
    waiters = [asyncio.create_task(q.lease("a", f"r{i}", 20).acquire()) for i in (1, 2)]
    await asyncio.sleep(0.05)
    assert q.waiting == 2
    with pytest.raises(ServiceError) as info:
        await q.lease("b", "r3", 20).acquire()
    assert info.value.kind is ErrorKind.BUSY and info.value.code == "queue_full"
    assert info.value.retry_after >= 1
    # room again, but 2 ahead × ~5 s per prompt > QUEUE_MAX_WAIT of 8 s: refused without waiting
    q.settings = Settings(ACCOUNT_MAX_CONCURRENT=1, ACCOUNT_MIN_GAP=0, QUEUE_MAX_WAIT=8, QUEUE_MAX_SIZE=10)
    with pytest.raises(ServiceError) as info:
        await q.lease("b", "r4", 20).acquire()
    assert info.value.code == "queue_wait_exceeded" and q.waiting == 2
    await held.release()  # the waiters are served in turn
    first = await asyncio.wait_for(asyncio.shield(waiters[0]), 5)
    assert first[1] == q.pool.fingerprints[0]
    for w in waiters:
        w.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    assert q.waiting == 0


class Interleaved(DynamoLeaseStore):
    """Runs `between()` once, right after its first read: another instance acting between this
    instance's read and its conditional write."""

    def __init__(self, settings, between) -> None:
        super().__init__(settings)
        self.between = between

    async def read(self, fn, **kwargs):
        resp = await super().read(fn, **kwargs)
        if self.between is not None:
            between, self.between = self.between, None
            await between()
        return resp


@pytest.mark.parametrize("released", [False, True])
async def test_a_take_between_read_and_write_wins(moto, tables, released):
    """Another instance takes the slot (and gives it back, `released`) after this one read the account
    as free: this one's write fails its condition, it reads again and is refused — for the held slot,
    or, once released, for ACCOUNT_MIN_GAP since the other's post."""
    c = store_settings(moto, tables)
    acct = uniq("fp")
    other = DynamoLeaseStore(c)
    kw = {"max_concurrent": 1, "min_gap": 5.0, "ttl": 100.0}
    now = time.time()

    async def other_takes() -> None:
        assert (await other.take(acct, "other", now, **kw)).slot == 0
        if released:
            await other.release(acct, 0, "other")

    d = await Interleaved(c, other_takes).take(acct, "me", now, **kw)
    assert d.slot is None
    assert d.retry_in == pytest.approx(5.0 if released else 100.0, abs=1.0)


async def test_the_queue_serves_keys_in_turn():
    """One account, held; key a queues 4 requests, then key b one: b is served second, not fifth."""
    s = Settings(ACCOUNT_MAX_CONCURRENT=1, ACCOUNT_MIN_GAP=0, QUEUE_MAX_WAIT=120, QUEUE_MAX_SIZE=10)
    q = AccountQueue(s, AccountPool(["token-one-xxxxxxxxxxxx"], MemoryHealthStore(), tz="UTC",
                                    reset_time="00:00"), MemoryLeaseStore())
    first = q.lease("a", "a-first", 20)
    await first.acquire()
    served: list[str] = []
    held: list = [first]

    async def wait(key: str, n: int) -> None:
        lease = q.lease(key, f"{key}{n}", 20)
        await lease.acquire()
        served.append(f"{key}{n}")
        held.append(lease)

    tasks = [asyncio.create_task(wait("a", n)) for n in range(4)]
    await asyncio.sleep(0.02)
    tasks.append(asyncio.create_task(wait("b", 0)))
    await asyncio.sleep(0.02)
    assert q.waiting == 5
    while len(served) < 5:
        await held[-1].release()  # the prompt in flight ends: the next in turn gets the account
        n = len(served)
        while len(served) == n:
            await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)
    assert served == ["a0", "b0", "a1", "a2", "a3"]


async def test_renew_holds_the_slot_for_its_holder_only(leases):
    a, b = leases(), leases()
    acct = uniq("fp")
    kw = {"max_concurrent": 1, "min_gap": 0.0, "ttl": 10.0}
    assert (await a.take(acct, "r1", 1000.0, **kw)).slot == 0  # held until 1010
    assert await b.renew(acct, 0, "r1", 1025.0)  # any instance may renew it for its holder
    assert (await b.take(acct, "r2", 1015.0, **kw)).slot is None  # renewed: still held at 1015
    assert not await a.renew(acct, 0, "someone-else", 1100.0)
    assert (await b.take(acct, "r2", 1026.0, **kw)).slot == 0  # expired at 1025: taken over
    assert not await a.renew(acct, 0, "r1", 1100.0)  # r1 lost it: renewing cannot take it back
    assert (await a.take(acct, "r3", 1030.0, **kw)).slot is None  # r2 holds it


async def test_a_reply_longer_than_its_lease_keeps_its_account(leases):
    """A stream's timeout counts between two edits, so a reply can outlast its lease's ttl (request
    timeout + 30 s). Before, the slot then expired mid-reply and another request took the account
    (two prompts in flight with ACCOUNT_MAX_CONCURRENT=1); now the reply's updates renew it."""
    clock = [1000.0]
    s = Settings(ACCOUNT_MAX_CONCURRENT=1, ACCOUNT_MIN_GAP=0, QUEUE_MAX_WAIT=0.5, QUEUE_MAX_SIZE=10)
    pool = AccountPool([uniq("token-one-xxxxxxxx")], MemoryHealthStore(), tz="UTC", reset_time="00:00")
    q = AccountQueue(s, pool, leases(), clock=lambda: clock[0])
    long_reply = q.lease("k1", "req-long", 10)  # ttl = 10 + 30 s
    await long_reply.acquire()
    for _ in range(12):  # a reply streaming for 120 s, an update every 10 s
        clock[0] += 10
        await long_reply.keep()
    other = q.lease("k2", "req-other", 10)
    with pytest.raises(ServiceError) as busy:
        await other.acquire()
    assert busy.value.kind is ErrorKind.BUSY
    await long_reply.release()
    await other.acquire()
    assert other.account
