"""GatewayHub.on_sent, the optional observer bench/stream_bench.py times the fake's edits with."""

from __future__ import annotations

import time

from .conftest import ready_gateway


async def test_on_sent_sees_each_dispatch_with_the_time_it_was_written(fake):
    seen: list[tuple[str | None, str | None, float]] = []
    fake.sim.gateway.on_sent = lambda session, payload, sent_at: seen.append(
        (session.user_id if session else None, payload.get("t"), sent_at))
    try:
        gw, _ = await ready_gateway(fake)
        before = time.perf_counter()
        fake.post_as_user(fake.config.channel_id, "observed")
        ev = (await gw.recv_until(lambda p: p.get("t") == "MESSAGE_CREATE"))[-1]
        received = time.perf_counter()
        creates = [s for s in seen if s[1] == "MESSAGE_CREATE"]
        assert ev["d"]["content"] == "observed" and len(creates) == 1
        assert creates[0][0] == fake.config.bot_user_id
        assert before <= creates[0][2] <= received
        assert {"READY", "GUILD_CREATE"} <= {s[1] for s in seen}
        await gw.close()
    finally:
        fake.sim.gateway.on_sent = None
