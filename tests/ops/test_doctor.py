"""`cdp doctor` against the fake Discord: a healthy setup, then each setup mistake injected."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from cdp.entry import doctor
from cdp.entry.bootstrap import make_rest
from cdp.sim import FakeDiscord

from tests.ops.conftest import Signer, sim_settings
from tests.support.fake import fast_sim_config
from tests.support.proc import settings_env


@pytest.fixture
def fake():
    with FakeDiscord(fast_sim_config()) as fd:
        yield fd


async def checks_for(fake, cwd=None, **over) -> dict[str, doctor.Check]:
    settings = sim_settings(fake, **over)
    rest = make_rest(settings)
    try:
        checks = await doctor.run_checks(settings, rest, cwd=cwd)
    finally:
        await rest.aclose()
    text = doctor.render(checks)
    for secret in [fake.config.bot_token, *fake.config.user_tokens, "sk-test-key-1"]:
        assert secret not in text, "a secret reached the doctor's output"
    return {c.name: c for c in checks}


def problems(checks: dict[str, doctor.Check]) -> list[str]:
    return [name for name, c in checks.items() if c.problem]


async def test_healthy_setup_has_no_problem(fake, tmp_path):
    checks = await checks_for(fake, cwd=tmp_path)
    assert problems(checks) == []
    assert checks["BOT_TOKEN"].state == doctor.OK
    assert checks["Message Content intent"].state == doctor.OK
    assert checks["channel limit"].detail.startswith("2 of 500 channels used, 498 left")
    assert sum(1 for n in checks if n.startswith("user account #")) == 4  # valid + in server, twice
    assert checks["DISCORD_PUBLIC_KEY"].state == doctor.SKIP


async def test_bot_token_reset(fake, tmp_path):
    fake.revoke_token(fake.config.bot_token)
    checks = await checks_for(fake, cwd=tmp_path)
    assert checks["BOT_TOKEN"].problem and "Reset Token" in checks["BOT_TOKEN"].fix
    # everything that needs the bot is skipped, not reported as a second problem
    assert checks["GUILD_ID"].state == doctor.SKIP and checks["Message Content intent"].state == doctor.SKIP


async def test_bot_token_is_the_coze_bots(fake, tmp_path):
    coze_id = fake.config.coze_bot_ids[0]
    checks = await checks_for(fake, cwd=tmp_path, BOT_TOKEN=fake.config.coze_bot_tokens[coze_id])
    assert checks["BOT_TOKEN"].problem and "Coze bot" in checks["BOT_TOKEN"].detail


@pytest.mark.parametrize("flags,ok", [(0, False), (1 << 18, True), (1 << 19, True), (1 << 12, False)])
async def test_message_content_intent(fake, tmp_path, flags, ok):
    fake.set_app_flags(flags)
    check = (await checks_for(fake, cwd=tmp_path))["Message Content intent"]
    assert check.problem is not ok
    if not ok:
        assert "MESSAGE CONTENT INTENT" in check.fix


async def test_guild_id_unknown_and_bot_not_in_guild(fake, tmp_path):
    checks = await checks_for(fake, cwd=tmp_path, GUILD_ID="1999999999999999999")
    assert checks["GUILD_ID"].problem and "oauth2/authorize?client_id=" in checks["GUILD_ID"].fix
    assert checks["bot permissions"].state == doctor.SKIP
    fake.remove_member(fake.config.bot_user_id)
    checks = await checks_for(fake, cwd=tmp_path)
    assert checks["GUILD_ID"].problem and "not in it" in checks["GUILD_ID"].detail


async def test_guild_id_and_channel_id_mixed_up(fake, tmp_path):
    cfg = fake.config
    checks = await checks_for(fake, cwd=tmp_path, GUILD_ID=cfg.channel_id, CHANNEL_ID=cfg.guild_id)
    assert "is a channel" in checks["GUILD_ID"].detail
    assert f"GUILD_ID={cfg.guild_id}" in checks["GUILD_ID"].fix
    assert checks["CHANNEL_ID"].problem and "server's id" in checks["CHANNEL_ID"].detail


async def test_channel_id_not_a_text_channel_or_unknown(fake, tmp_path):
    checks = await checks_for(fake, cwd=tmp_path, CHANNEL_ID=fake.config.category_id)
    assert checks["CHANNEL_ID"].problem and "category" in checks["CHANNEL_ID"].detail
    checks = await checks_for(fake, cwd=tmp_path, CHANNEL_ID="1888888888888888888")
    assert checks["CHANNEL_ID"].problem and "does not exist" in checks["CHANNEL_ID"].detail


async def test_coze_bot_and_user_not_members(fake, tmp_path):
    cfg = fake.config
    fake.remove_member(cfg.coze_bot_ids[0])
    fake.remove_member("1400000000000000002")  # bob
    checks = await checks_for(fake, cwd=tmp_path)
    assert problems(checks) == [f"Coze bot {cfg.coze_bot_ids[0]}", next(n for n in checks if n.startswith(
        "user account #2") and n.endswith("in server"))]
    assert "Publish" in checks[f"Coze bot {cfg.coze_bot_ids[0]}"].fix


async def test_coze_bot_id_is_a_user(fake, tmp_path):
    checks = await checks_for(fake, cwd=tmp_path, COZE_BOT_ID="1400000000000000002")
    assert checks["Coze bot 1400000000000000002"].problem


async def test_bot_may_not_manage_channels(fake, tmp_path):
    fake.set_role_permissions(fake.bot_role_id(), 1 << 10)  # VIEW_CHANNEL only
    checks = await checks_for(fake, cwd=tmp_path)
    assert problems(checks) == ["bot permissions"]
    assert "Manage Channels" in checks["bot permissions"].fix
    # not needed when every request uses CHANNEL_ID
    checks = await checks_for(fake, cwd=tmp_path, DEFAULT_CHANNEL_ENABLE="1")
    assert problems(checks) == []
    fake.set_role_permissions(fake.bot_role_id(), 1 << 3)  # ADMINISTRATOR implies it
    assert problems(await checks_for(fake, cwd=tmp_path)) == []


async def test_user_tokens_expired_or_unverified(fake, tmp_path):
    alice, bob = list(fake.config.user_tokens)
    fake.revoke_token(alice)
    fake.mark_unverified(bob)
    checks = await checks_for(fake, cwd=tmp_path)
    bad = problems(checks)
    assert len(bad) == 2 and all(n.startswith("user account #") for n in bad)
    assert "401" in checks[bad[0]].detail and "verify" in checks[bad[1]].detail


async def test_channels_left_before_the_limit(fake, tmp_path):
    fake.add_channels(485)
    check = (await checks_for(fake, cwd=tmp_path))["channel limit"]
    assert check.problem and "13 left" in check.detail and "MAX_CHANNEL_DEL_TYPE" in check.fix


async def test_public_key_must_match_the_application(tmp_path):
    signer = Signer()
    with FakeDiscord(fast_sim_config(app_public_key=signer.public_key)) as fd:
        assert (await checks_for(fd, cwd=tmp_path, DISCORD_PUBLIC_KEY=signer.public_key))[
            "DISCORD_PUBLIC_KEY"].state == doctor.OK
        check = (await checks_for(fd, cwd=tmp_path, DISCORD_PUBLIC_KEY=Signer().public_key))["DISCORD_PUBLIC_KEY"]
        assert check.problem and "Public Key" in check.fix


async def test_bot_config_entries_and_proxy_secret(fake, tmp_path):
    pytest.importorskip("cdp.adapters.botconfig")
    (tmp_path / "config").mkdir()
    entries = [{"proxySecret": "sk-test-key-1", "cozeBotId": fake.config.coze_bot_ids[0], "model": ["gpt-4o"]},
               {"proxySecret": "sk-not-a-key", "cozeBotId": "1300000000000000777", "model": ["gpt-4"]}]
    (tmp_path / "config" / "bot_config.json").write_text(json.dumps(entries))
    checks = await checks_for(fake, cwd=tmp_path)
    check = checks["bot_config.json"]
    assert check.problem and "entry 1" in check.detail and "sk-not-a-key" not in check.detail
    # the entries' Coze bots are checked too: 1300000000000000777 is not in the guild
    assert checks["Coze bot 1300000000000000777"].problem
    (tmp_path / "config" / "bot_config.json").write_text(json.dumps(entries[:1]))
    assert (await checks_for(fake, cwd=tmp_path))["bot_config.json"].state == doctor.OK
    (tmp_path / "config" / "bot_config.json").write_text("[{]")
    assert (await checks_for(fake, cwd=tmp_path))["bot_config.json"].problem


async def test_dynamodb_tables(fake, tmp_path, monkeypatch):
    from tests.support.aws import aws_env, create_tables, moto_server, unique_prefix

    with moto_server() as server:
        prefix = unique_prefix("doc")
        for k, v in aws_env(server, prefix).items():
            monkeypatch.setenv(k, v)
        check = (await checks_for(fake, cwd=tmp_path, CDP_STORE="dynamodb"))["store"]
        assert check.problem and f"{prefix}-replies" in check.detail
        create_tables(server.client(), prefix)
        check = (await checks_for(fake, cwd=tmp_path, CDP_STORE="dynamodb"))["store"]
        assert check.state == doctor.OK and "ACTIVE" in check.detail


def run_cli(fake, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH")}
    return subprocess.run([sys.executable, "-m", "cdp.entry.cli", *args], capture_output=True, text=True, timeout=60, check=False,
                          env={**base, **settings_env(fake), **env}, cwd=fake_cwd())


def fake_cwd() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="cdp-doctor-")


def test_cli_exit_status_and_output(fake):
    ok = run_cli(fake, "doctor")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.strip().endswith("— ready")
    fake.set_app_flags(0)
    fake.revoke_token(next(iter(fake.config.user_tokens)))
    bad = run_cli(fake, "doctor")
    assert bad.returncode == 1
    lines = bad.stdout.strip().splitlines()
    assert sum(line.startswith("PROBLEM") for line in lines) == 2
    assert all(" — fix: " in line for line in lines if line.startswith("PROBLEM"))
    for secret in [fake.config.bot_token, *fake.config.user_tokens]:
        assert secret not in bad.stdout + bad.stderr


def test_cli_bad_settings_are_problems(fake):
    res = run_cli(fake, "doctor", GUILD_ID="not-a-number")
    assert res.returncode == 1 and res.stdout.startswith("PROBLEM settings: GUILD_ID is malformed")


def api_checks(fake, **over) -> dict[str, doctor.Check]:
    """The API-key checks alone (they ask nothing of Discord)."""
    settings = sim_settings(fake, **over)
    checks = doctor.Doctor(settings, None).api_keys()  # type: ignore[arg-type]
    text = doctor.render(checks)
    for secret in ["sk-test-key-1", "sk-test-key-2", "sk-admin-key-9"]:
        assert secret not in text
    return {c.name: c for c in checks}


def test_open_api_is_a_problem(fake):
    check = api_checks(fake, PROXY_SECRET="", HOST="0.0.0.0")["PROXY_SECRET"]
    assert check.problem and "open API" in check.detail and "PROXY_SECRET" in check.fix
    # on AWS the API Gateway URL is public whatever HOST says
    assert api_checks(fake, PROXY_SECRET="", HOST="127.0.0.1", CDP_STORE="dynamodb")["PROXY_SECRET"].problem
    # opted out on purpose: still said, as a warning
    assert api_checks(fake, PROXY_SECRET="", ALLOW_OPEN_API="1")["PROXY_SECRET"].state == doctor.WARN
    assert api_checks(fake, PROXY_SECRET="", HOST="127.0.0.1")["PROXY_SECRET"].state == doctor.OK
    assert api_checks(fake)["PROXY_SECRET"].state == doctor.OK


def test_admin_key_warning_and_shared_keys(fake):
    check = api_checks(fake)["PROXY_ADMIN_SECRET"]
    assert check.state == doctor.WARN and "delete channels" in check.detail
    assert "warn    PROXY_ADMIN_SECRET" in doctor.render([check]) and "1 warning(s)" in doctor.render([check])
    assert api_checks(fake, PROXY_ADMIN_SECRET="sk-admin-key-9")["PROXY_ADMIN_SECRET"].state == doctor.OK
    shared = api_checks(fake, PROXY_ADMIN_SECRET="sk-admin-key-9,sk-test-key-2")["PROXY_ADMIN_SECRET"]
    assert shared.problem and "PROXY_SECRET too" in shared.detail


def test_cli_reports_an_open_api(fake):
    res = run_cli(fake, "doctor", PROXY_SECRET="", HOST="0.0.0.0")
    assert res.returncode == 1
    line = next(line for line in res.stdout.splitlines() if line.startswith("PROBLEM PROXY_SECRET"))
    assert "open API" in line and " — fix: " in line
