"""A temporary channel is deleted once, and even when the store fails: the cleanup job and the keeper's
own delayed deletion must not both DELETE it (each DELETE counts against Discord's deletion rate
limit, the second only gets a 404: about 5 % of the 20k soak's deletions did), and a failed write
of its deletion time must not leave it to the 16-minute stale sweep."""

from __future__ import annotations

import asyncio

import pytest
from cdp.adapters.store.memory import MemoryChannelRegistry
from cdp.app.channels import ChannelKeeper
from cdp.domain.model import TempChannel
from cdp.settings import load_settings

pytestmark = pytest.mark.usefixtures("clean_env")  # settings from their defaults only


class CountingRest:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    async def delete_channel(self, channel_id: str) -> None:
        self.deleted.append(channel_id)


async def test_the_cleanup_job_leaves_a_channel_to_its_pending_delayed_deletion():
    clock = [1000.0]
    settings = load_settings(GUILD_ID="1100000000000000001", CHANNEL_AUTO_DEL_TIME="0.3", BOT_TOKEN="b.t",
                             USER_AUTHORIZATION="u.t", COZE_BOT_ID="1300000000000000001")
    registry, rest = MemoryChannelRegistry(), CountingRest()
    keeper = ChannelKeeper(settings, rest, registry, clock=lambda: clock[0])
    for cid in ("1200000000000000001", "1200000000000000002"):
        await registry.add(TempChannel(cid, settings.GUILD_ID, clock[0], None, "req_x"))
    await keeper.schedule_delete("1200000000000000001")  # this process deletes it in 0.3 s
    await registry.schedule_delete("1200000000000000002", clock[0])  # a crash left this one due
    clock[0] += 10  # both are due now
    assert await keeper.delete_due() == 1
    assert rest.deleted == ["1200000000000000002"]
    for _ in range(100):  # the delayed deletion does the other one, once
        if len(rest.deleted) == 2:
            break
        await asyncio.sleep(0.05)
    assert rest.deleted == ["1200000000000000002", "1200000000000000001"]
    assert await keeper.delete_due() == 0 and rest.deleted.count("1200000000000000001") == 1


class FailingScheduleRegistry(MemoryChannelRegistry):
    """The store fails the write of a deletion time (DynamoDB 500s, throttling)."""

    async def schedule_delete(self, channel_id, delete_at):
        raise RuntimeError("store unavailable")


async def test_a_failed_registry_write_still_deletes_the_channel_from_this_process():
    """Before, the in-process deletion was never started when the store refused the deletion time:
    the channel stayed "in use" in the registry and in Discord until the stale sweep (16 minutes;
    the fault run counted it as leaked)."""
    settings = load_settings(GUILD_ID="1100000000000000001", CHANNEL_AUTO_DEL_TIME="0.1", BOT_TOKEN="b.t",
                             USER_AUTHORIZATION="u.t", COZE_BOT_ID="1300000000000000001")
    registry, rest = FailingScheduleRegistry(), CountingRest()
    keeper = ChannelKeeper(settings, rest, registry)
    await registry.add(TempChannel("1200000000000000003", settings.GUILD_ID, 1000.0, None, "req_y"))
    await keeper.schedule_delete("1200000000000000003")
    for _ in range(100):
        if rest.deleted:
            break
        await asyncio.sleep(0.02)
    assert rest.deleted == ["1200000000000000003"]
    assert await registry.all() == []  # and forgotten


class CreatingRest(CountingRest):
    async def create_channel(self, guild_id, name, **kw):
        return {"id": "1200000000000000009"}


class SlowScheduleRegistry(MemoryChannelRegistry):
    """The write of a deletion time is still under way when the shutdown comes (DynamoDB, slow)."""

    async def schedule_delete(self, channel_id, delete_at):
        await asyncio.sleep(5)


def _settings():
    return load_settings(GUILD_ID="1100000000000000001", CHANNEL_AUTO_DEL_TIME="1", BOT_TOKEN="b.t",
                         USER_AUTHORIZATION="u.t", COZE_BOT_ID="1300000000000000001")


async def test_shutdown_deletes_the_channel_of_a_request_it_cut_before_the_channel_was_handed_back():
    """The fault run's leaked channel: uvicorn cancels a request its drain cut and returns at once, so
    the keeper closed before the request handed its channel back; the channel stayed registered "in
    use", deleted only by the 16-minute stale sweep."""
    registry, rest = MemoryChannelRegistry(), CreatingRest()
    keeper = ChannelKeeper(_settings(), rest, registry)
    cid = await keeper.create("req_cut")
    await keeper.aclose(wait=2.0)
    assert rest.deleted == [cid]
    assert await registry.all() == []


async def test_shutdown_during_the_deletion_time_write_still_deletes_the_channel():
    registry, rest = SlowScheduleRegistry(), CreatingRest()
    keeper = ChannelKeeper(_settings(), rest, registry)
    cid = await keeper.create("req_cut")
    handing_back = asyncio.create_task(keeper.schedule_delete(cid))
    await asyncio.sleep(0.01)  # the request is inside the store write
    await keeper.aclose(wait=2.0)
    assert rest.deleted == [cid]
    handing_back.cancel()  # the slow write itself
    with pytest.raises(asyncio.CancelledError):
        await handing_back


class FailingAddRegistry(MemoryChannelRegistry):
    async def add(self, channel):
        raise RuntimeError("store unavailable")


async def test_a_channel_the_registry_could_not_record_is_deleted_at_once():
    """Before, it was left in Discord for the stray sweep (CHANNEL_SWEEP_AGE, an hour by default)."""
    registry, rest = FailingAddRegistry(), CreatingRest()
    keeper = ChannelKeeper(_settings(), rest, registry)
    with pytest.raises(RuntimeError):
        await keeper.create("req_store_down")
    await keeper.aclose(wait=2.0)
    assert rest.deleted == ["1200000000000000009"]
