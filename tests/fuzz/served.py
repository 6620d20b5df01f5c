"""The running stack the fuzz tests call: `cdp serve` (API + listener in one process) on a fake Discord
without REST rate limits (the fuzzers test the proxy, not Discord's buckets), with an admin key and a
Discord application key (so /interactions bodies can be signed as Discord signs them)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ops.conftest import Signer
from tests.support.fake import fast_sim_config
from tests.support.stack import Stack, start_stack

ADMIN_KEY = "sk-fuzz-admin-1"
SIGNER = Signer()  # the application's key: /interactions bodies are signed as Discord signs them
NO_LIMITS = {"POST /channels/{channel_id}/messages": (10_000, 1.0),
             "POST /guilds/{guild_id}/channels": (10_000, 1.0),
             "DELETE /channels/{channel_id}": (10_000, 1.0)}


@pytest.fixture(scope="session")  # one per xdist worker, shared by the fuzz modules
def served() -> Iterator[Stack]:
    from cdp.sim import FakeDiscord

    with FakeDiscord(fast_sim_config(rate_limits=NO_LIMITS, global_rate_limit=100_000, max_channels=5000,
                                     app_public_key=SIGNER.public_key)) as fake:
        stack = start_stack("memory", fake, PROXY_ADMIN_SECRET=ADMIN_KEY, LOG_LEVEL="INFO", REQUEST_RATE_LIMIT="0",
                            DISCORD_PUBLIC_KEY=SIGNER.public_key,
                            REQUEST_OUT_TIME="8", STREAM_REQUEST_OUT_TIME="8")
        yield stack
        stack.stop()
