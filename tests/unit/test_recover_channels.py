"""Which channels a listener re-reads after a gap: also a sticky conversation's channel, which always
has a deletion time (pushed back at every turn), never a channel already due."""

from __future__ import annotations

from cdp.adapters.store.memory import MemoryChannelRegistry
from cdp.domain.model import TempChannel
from cdp.entry.listener import channels_to_recover

GUILD = "1100000000000000001"


async def test_in_use_and_not_yet_due_channels_are_recovered_due_ones_are_not():
    registry = MemoryChannelRegistry()
    await registry.add(TempChannel("1201", GUILD, 900.0, None, "req_in_use"))
    await registry.add(TempChannel("1202", GUILD, 900.0, 2000.0, "req_sticky"))  # idle TTL ahead
    await registry.add(TempChannel("1203", GUILD, 900.0, 999.0, "req_done"))  # due: being deleted
    got = await channels_to_recover(registry, ["1100", "", "1201"], now=1000.0)
    assert got == ["1201", "1202", "1100"]
