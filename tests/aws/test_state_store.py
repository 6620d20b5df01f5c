"""DynamoDB health / rate-limit / alert stores against a moto server, tables from template.yaml.

The same contract as the memory adapters (each test runs against both), plus what only a shared
store gives: two processes (two store objects) see one state, and it survives a restart.
"""

from __future__ import annotations

import asyncio

import pytest
from cdp.adapters.store.dynamodb.state import DynamoAlertStore, DynamoHealthStore, DynamoRateLimitStore
from cdp.adapters.store.memory import MemoryAlertStore, MemoryHealthStore, MemoryRateLimitStore
from cdp.app.pool import AccountPool, NoUsableAccount
from cdp.domain.accounts import KIND_ACCOUNT, KIND_BOT, Health, HealthRecord

from tests.support.aws import store_settings


@pytest.fixture(params=["memory", "dynamodb"])
def stores(request, moto, tables):
    """A factory of store triples sharing one state (dynamodb: new objects = another process)."""
    if request.param == "memory":
        shared = (MemoryHealthStore(), MemoryRateLimitStore(), MemoryAlertStore())
        return lambda: shared
    c = store_settings(moto, tables)
    return lambda: (DynamoHealthStore(c), DynamoRateLimitStore(c), DynamoAlertStore(c))


def uniq(label: str) -> str:
    import uuid

    return f"{label}-{uuid.uuid4().hex[:8]}"


async def test_health_claim_is_conditional_and_dead_is_final(stores):
    health, _, _ = stores()
    other, _, _ = stores()
    key = uniq("tok")
    assert await health.claim(KIND_ACCOUNT, key, 0.0, 100.0)
    assert not await other.claim(KIND_ACCOUNT, key, 0.0, 101.0)  # someone else claimed it first
    assert await other.claim(KIND_ACCOUNT, key, 100.0, 102.0)
    await health.save_health(KIND_ACCOUNT, HealthRecord(key).resting(5000.0, "daily limit"))
    rec = (await other.load(KIND_ACCOUNT))[key]
    assert rec.health == Health.RESTING and rec.resting_until == 5000.0 and rec.last_used == 102.0
    await other.save_health(KIND_ACCOUNT, rec.dead(200.0, "401 unauthorized"))
    await health.save_health(KIND_ACCOUNT, HealthRecord(key))  # a stale "healthy" must not revive it
    rec = (await health.load(KIND_ACCOUNT))[key]
    assert rec.health == Health.DEAD and rec.dead_since == 200.0 and rec.resting_until is None
    assert key not in await health.load(KIND_BOT)


async def test_pool_state_is_shared_and_survives_a_restart(stores):
    tokens = [uniq("token-aaaaaaaa"), uniq("token-bbbbbbbb")]
    clock = iter(range(1000, 2000)).__next__
    first = AccountPool(tokens, stores()[0], tz="UTC", reset_time="00:00", clock=lambda: float(clock()))
    _, fp_a = await first.acquire()
    await first.mark_dead(fp_a, "401 unauthorized")
    # "restart": a new pool over the same store
    second = AccountPool(tokens, stores()[0], tz="UTC", reset_time="00:00", clock=lambda: float(clock()))
    picks = {(await second.acquire())[1] for _ in range(3)}
    assert fp_a not in picks and len(picks) == 1
    await second.rest(picks.pop(), "daily limit")
    with pytest.raises(NoUsableAccount) as info:
        await first.acquire()
    assert 0 < info.value.retry_after <= 24 * 3600


async def test_concurrent_acquires_spread_over_accounts(stores):
    tokens = [uniq(f"token-{i}-xxxxxxxx") for i in range(4)]
    pools = [AccountPool(tokens, stores()[0], tz="UTC", reset_time="00:00") for _ in range(4)]
    got = await asyncio.gather(*[p.acquire() for p in pools])
    assert len({fp for _, fp in got}) == 4  # a claimed account is not handed out twice


async def test_rate_limit_counts_per_key_and_window(stores):
    _, rl, _ = stores()
    _, rl2, _ = stores()
    key = uniq("ip")
    assert [await rl.hit(key, 7, 120) for _ in range(3)] == [1, 2, 3]
    assert await rl2.hit(key, 7, 120) == 4
    assert await rl.hit(key, 8, 120) == 1
    assert await rl.hit(uniq("ip"), 7, 120) == 1


async def test_alert_once_per_day_and_release(stores):
    _, _, alerts = stores()
    _, _, other = stores()
    key = uniq("no_usable_account")
    assert await alerts.claim(key, "2025-04-09")
    assert not await other.claim(key, "2025-04-09")
    assert await other.claim(key, "2025-04-10")
    await alerts.release(key, "2025-04-09")  # not the current claim: no effect
    assert not await alerts.claim(key, "2025-04-10")
    await other.release(key, "2025-04-10")
    assert await alerts.claim(key, "2025-04-10")
