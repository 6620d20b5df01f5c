"""The fake Discord (cdp.sim) for every test: one SimConfig with fast timings, and its fixtures.

tests/conftest.py registers `fake` (one per test module) and `make_fake` (fresh ones, per test, with
overrides of the config) for the whole suite.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from cdp.sim import FakeDiscord, SimConfig


def fast_sim_config(**overrides) -> SimConfig:
    """SimConfig with Discord's limits but fast timings. Temp channels may be created 50 per 10 s
    (Discord's real bucket is larger than the fake's default), so suites that make many don't wait."""
    rate_limits = {**SimConfig().rate_limits, "POST /guilds/{guild_id}/channels": (50, 10.0)}
    base = dict(heartbeat_interval_ms=1000, coze_edit_interval=0.05, coze_first_token_delay=0.05,
                rate_limits=rate_limits)
    return SimConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeDiscord]:
    with FakeDiscord(fast_sim_config()) as fd:
        yield fd


@pytest.fixture
def make_fake() -> Iterator[Callable[..., FakeDiscord]]:
    """make_fake(**overrides) -> a started FakeDiscord of its own, stopped after the test."""
    started: list[FakeDiscord] = []

    def make(**overrides) -> FakeDiscord:
        fd = FakeDiscord(fast_sim_config(**overrides)).start()
        started.append(fd)
        return fd

    yield make
    for fd in started:
        fd.stop()
