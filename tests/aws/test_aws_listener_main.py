"""`cdp listener` as its own process against the fake Discord and the moto server: health check,
recording into DynamoDB, recovery of replies that arrived while it was down, SIGTERM, bad token."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest
from cdp.adapters.store.dynamodb import DynamoChannelRegistry, DynamoReplyStore
from cdp.domain.model import TempChannel
from cdp.settings import Settings
from cdp.sim import FakeDiscord, SimConfig

from tests.support.aws import aws_env, free_port, wait_until
from tests.support.aws import healthz as health


@pytest.fixture(scope="module")
def fake():
    cfg = SimConfig(port=0, heartbeat_interval_ms=1000, coze_edit_interval=0.03, coze_first_token_delay=0.03)
    with FakeDiscord(cfg) as fd:
        yield fd


def listener_env(fake, moto, prefix, **over) -> dict[str, str]:
    cfg = fake.config
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDP_", "AWS_"))}
    env.update(aws_env(moto, prefix))
    env.update({"BOT_TOKEN": cfg.bot_token, "GUILD_ID": cfg.guild_id, "COZE_BOT_ID": cfg.coze_bot_ids[0],
                "USER_AUTHORIZATION": ",".join(cfg.user_tokens), "DISCORD_API_BASE": fake.base_url,
                "LOG_LEVEL": "INFO"})
    env.update(over)
    return env


def start_listener(env, tmp_path, port):
    return subprocess.Popen([sys.executable, "-m", "cdp.entry.cli", "listener", "--health-port", str(port)],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)




def coze_done(fake, channel_id) -> bool:
    return any(m["author"]["id"] in fake.config.coze_bot_ids and m.get("components")
               for m in fake.messages(channel_id))


def test_listener_records_recovers_and_stops_on_sigterm(fake, moto, tables, tmp_path):
    prefix, _ = tables
    ds = Settings(CDP_TABLE_PREFIX=prefix, AWS_ENDPOINT_URL=moto.url, AWS_REGION="us-east-1",
                        _env_file=None)
    store, registry = DynamoReplyStore(ds), DynamoChannelRegistry(ds)
    coze = fake.config.coze_bot_ids[0]
    channel = fake.config.channel_id  # used as a "temporary channel in flight" in the registry

    # A prompt answered while no listener runs.
    missed = fake.post_as_user(channel, f"<@{coze}> hello while down")
    wait_until(lambda: coze_done(fake, channel))
    asyncio.run(registry.add(TempChannel(channel, fake.config.guild_id, time.time(), None, "req_x")))

    port = free_port()
    proc = start_listener(listener_env(fake, moto, prefix), tmp_path, port)
    try:
        wait_until(lambda: health(port)[0] == 200, timeout=30)
        assert health(port)[1]["gateway"]["state"] == "ready"

        def recorded(prompt_id, complete=False):
            snap = asyncio.run(store.snapshot(prompt_id))
            ok = snap.messages and (not complete or snap.messages[-1].has_components)
            return snap if ok else None

        # recovered from REST history
        snap = wait_until(lambda: recorded(missed["id"], complete=True), timeout=15)
        assert snap.messages[0].author_id == coze and snap.messages[-1].has_components

        # live: recorded from the gateway
        live = fake.post_as_user(channel, f"<@{coze}> hello live")
        snap = wait_until(lambda: recorded(live["id"], complete=True), timeout=15)
        assert snap.messages[-1].content

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        out = proc.communicate()[0].decode(errors="replace")
    for token in (fake.config.bot_token, *fake.config.user_tokens):
        assert token not in out


def test_listener_exits_non_zero_on_a_bad_token(fake, moto, tables, tmp_path):
    prefix, _ = tables
    port = free_port()
    env = listener_env(fake, moto, prefix, BOT_TOKEN="not-the-right-token.xxxxxxxxxxxxxxxxxxxxxx")
    proc = start_listener(env, tmp_path, port)
    try:
        assert proc.wait(30) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
        out = proc.communicate()[0].decode(errors="replace")
    assert "not-the-right-token" not in out
