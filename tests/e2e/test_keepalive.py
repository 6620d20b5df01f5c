"""Keepalive (COZE_BOT_STAY_ACTIVE_ENABLE): one message from a user account mentioning every
configured Coze bot, in its channel or in a temporary channel deleted afterwards; `cdp keepalive`
as a real process, and `cdp serve` running it daily at KEEPALIVE_TIME (TZ)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from cdp.sim import FakeDiscord
from cdp.sim.config import make_token

from tests.support.aws import wait_until
from tests.support.fake import fast_sim_config
from tests.support.proc import run_cli_json as run_cli
from tests.support.stack import start_stack

pytestmark = pytest.mark.e2e

BOT_1, BOT_2 = "1300000000000000001", "1300000000000000002"


@pytest.fixture(scope="module")
def fake():
    cfg = fast_sim_config(coze_bot_ids=[BOT_1, BOT_2],
                          coze_bot_tokens={BOT_1: make_token(BOT_1, "sim-bot-token-coze-1"),
                                           BOT_2: make_token(BOT_2, "sim-bot-token-coze-2")})
    with FakeDiscord(cfg) as fd:
        yield fd


@pytest.fixture(scope="module")
def bot_config(fake, tmp_path_factory) -> str:
    """The original's bot_config.json: BOT_2 has its own channel (general)."""
    path = tmp_path_factory.mktemp("cfg") / "bot_config.json"
    path.write_text(json.dumps([{"proxySecret": "sk-test-key-1", "cozeBotId": BOT_2, "model": ["gpt-4o"],
                                 "channelId": fake.config.channel_id}]))
    return str(path)


def keepalives(fake, channel_id: str, bot: str) -> list[dict]:
    return [m for m in fake.messages(channel_id) if m["content"] == f"<@{bot}> keepalive"]


def test_cdp_keepalive_mentions_every_configured_bot(fake, bot_config):
    before = {c["id"] for c in fake.created_channels()}
    result = run_cli(fake, "keepalive", COZE_BOT_STAY_ACTIVE_ENABLE="1", COZE_BOT_ID=BOT_1, CHANNEL_ID="",
                     BOT_CONFIG_PATH=bot_config)
    assert result == {"exit": 0, "sent": 2, "failed": []}
    users = set(fake.config.user_tokens.values())
    # BOT_2 in its bot_config channel
    (m2,) = keepalives(fake, fake.config.channel_id, BOT_2)
    assert m2["author"]["id"] in users and [u["id"] for u in m2["mentions"]] == [BOT_2]
    # BOT_1 (COZE_BOT_ID without CHANNEL_ID) in a temporary channel, deleted afterwards
    (temp,) = [c for c in fake.created_channels() if c["id"] not in before]
    assert temp["name"].startswith("cdp-chat-keepalive-")
    (m1,) = keepalives(fake, temp["id"], BOT_1)
    assert m1["author"]["id"] in users
    # private (TEMP_CHANNEL_PRIVATE=1, the default): @everyone denied, the bot, BOT_1 and the poster in
    overwrites = {o["id"]: (o["allow"], o["deny"]) for o in temp["permission_overwrites"]}
    assert overwrites[fake.config.guild_id] == ("0", str(1 << 10))
    assert {fake.config.bot_user_id, BOT_1} <= set(overwrites)
    assert any(e["method"] == "PUT" and e["path"].endswith(f"/permissions/{m1['author']['id']}")
               for e in fake.request_log())
    assert temp["id"] in {c["id"] for c in fake.deleted_channels()}
    assert temp["id"] not in {c["id"] for c in fake.channels()}
    # the Coze bot saw it and answered (that is what keeps it active)
    deadline = time.monotonic() + 10
    while not [m for m in fake.messages(fake.config.channel_id)
               if (m.get("message_reference") or {}).get("message_id") == m2["id"]]:
        assert time.monotonic() < deadline, "BOT_2 never answered its keepalive"
        time.sleep(0.1)


def test_cdp_keepalive_respects_the_setting(fake):
    n = len(keepalives(fake, fake.config.channel_id, BOT_1))
    result = run_cli(fake, "keepalive", COZE_BOT_STAY_ACTIVE_ENABLE="0")
    assert result["exit"] == 0 and result["sent"] == 0 and "COZE_BOT_STAY_ACTIVE_ENABLE" in result["skipped"]
    assert len(keepalives(fake, fake.config.channel_id, BOT_1)) == n
    result = run_cli(fake, "keepalive", "--force", COZE_BOT_STAY_ACTIVE_ENABLE="0")
    assert result == {"exit": 0, "sent": 1, "failed": []}  # COZE_BOT_ID in CHANNEL_ID
    assert len(keepalives(fake, fake.config.channel_id, BOT_1)) == n + 1


def test_cdp_serve_sends_the_keepalive_daily_at_keepalive_time(fake):
    n = len(keepalives(fake, fake.config.channel_id, BOT_1))
    tz = "Asia/Shanghai"
    # far enough ahead that a slow start-up (busy CI) is over before it, near enough to wait for
    at = (datetime.now(UTC) + timedelta(seconds=12)).astimezone(ZoneInfo(tz))
    stack = start_stack("memory", fake, COZE_BOT_STAY_ACTIVE_ENABLE="1", TZ=tz,
                        KEEPALIVE_TIME=at.strftime("%H:%M:%S"))
    try:
        deadline = time.monotonic() + 25
        while len(keepalives(fake, fake.config.channel_id, BOT_1)) == n:
            assert time.monotonic() < deadline, "no keepalive at KEEPALIVE_TIME:\n" + stack.logs()[-3000:]
            time.sleep(0.1)

        def runs() -> list[dict]:
            lines = [json.loads(line) for line in stack.logs().splitlines() if line.startswith("{")]
            return [e for e in lines if e.get("msg") == "job done" and e.get("job") == "keepalive"]

        (run,) = wait_until(runs)
        # once, not every tick: its next run is tomorrow's
        assert datetime.fromisoformat(run["next_run"]) - datetime.now(UTC) > timedelta(hours=23)
        assert len(keepalives(fake, fake.config.channel_id, BOT_1)) == n + 1
    finally:
        stack.stop()
    assert '"job": "keepalive"' in stack.logs()


@pytest.mark.parametrize("where", ["other_channel_id", "dm_channel_id"])
def test_keepalive_never_posts_outside_guild_id(fake, where, tmp_path):
    """A bot_config channelId of another server or a DM is refused, as for chats: nothing is posted."""
    channel = getattr(fake.config, where)
    path = tmp_path / "bot_config.json"
    path.write_text(json.dumps([{"proxySecret": "sk-test-key-1", "cozeBotId": BOT_2, "model": ["gpt-4o"],
                                 "channelId": channel}]))
    posts_before = [e for e in fake.request_log() if e["method"] == "POST" and channel in e["path"]]
    result = run_cli(fake, "keepalive", COZE_BOT_STAY_ACTIVE_ENABLE="1", COZE_BOT_ID=BOT_1,
                     BOT_CONFIG_PATH=str(path))
    assert result == {"exit": 1, "sent": 1, "failed": [BOT_2]}
    assert [e for e in fake.request_log() if e["method"] == "POST" and channel in e["path"]] == posts_before


def test_keepalive_reports_bots_no_account_could_reach(fake):
    for token in fake.config.user_tokens:
        fake.revoke_token(token)
    result = run_cli(fake, "keepalive", COZE_BOT_STAY_ACTIVE_ENABLE="1")
    assert result == {"exit": 1, "sent": 0, "failed": [BOT_1]}

