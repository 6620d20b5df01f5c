"""Settings: the original's names and defaults, validated once, errors that name each problem."""

from __future__ import annotations

import pytest
from cdp.settings import DEFAULT_USER_AGENT, SettingsError, load_settings

DISCORD = {"USER_AUTHORIZATION": "u1.token.aaaaaa,u2.token.bbbbbb", "BOT_TOKEN": "bot.token.cccccc",
           "GUILD_ID": "110000000000000001", "COZE_BOT_ID": "130000000000000001"}


pytestmark = pytest.mark.usefixtures("clean_env")  # settings from their defaults only


def test_defaults_match_the_original():
    s = load_settings()
    assert s.demo
    assert (s.PORT, s.SWAGGER_ENABLE, s.ONLY_OPENAI_API, s.DEFAULT_CHANNEL_ENABLE) == (7077, True, False, False)
    assert (s.ALL_DIALOG_RECORD_ENABLE, s.CHANNEL_AUTO_DEL_TIME, s.COZE_BOT_STAY_ACTIVE_ENABLE) == (True, 5, True)
    assert (s.REQUEST_OUT_TIME, s.STREAM_REQUEST_OUT_TIME, s.REQUEST_RATE_LIMIT) == (60, 60, 60)
    assert s.MESSAGE_MAX_TOKEN == 128000 and s.USER_AGENT == DEFAULT_USER_AGENT
    assert s.DISCORD_API_BASE == "https://discord.com/api/v10" and s.HOST == "0.0.0.0"
    assert s.CDP_STORE == "memory"


def test_full_discord_settings_and_csv_lists(monkeypatch):
    for k, v in DISCORD.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("PROXY_SECRET", "k1, k2 ,")
    monkeypatch.setenv("ALL_DIALOG_RECORD_ENABLE", "0")
    s = load_settings()
    assert not s.demo
    assert s.user_tokens == ["u1.token.aaaaaa", "u2.token.bbbbbb"]
    assert s.api_keys == ["k1", "k2"]
    assert s.ALL_DIALOG_RECORD_ENABLE is False


def test_dotenv_file_is_read_and_environment_wins(monkeypatch, tmp_path):
    (tmp_path / ".env").write_text("PORT=8088\nREQUEST_OUT_TIME=30\n")
    monkeypatch.setenv("PORT", "9099")
    s = load_settings()
    assert s.PORT == 9099 and s.REQUEST_OUT_TIME == 30


def test_partial_discord_settings_name_every_missing_one(monkeypatch):
    monkeypatch.setenv("BOT_TOKEN", "bot.token.cccccc")
    with pytest.raises(SettingsError) as info:
        load_settings()
    problems = "\n".join(info.value.problems)
    for name in ("USER_AUTHORIZATION", "GUILD_ID", "COZE_BOT_ID"):
        assert f"{name} is missing" in problems
    assert "BOT_TOKEN is missing" not in problems


@pytest.mark.parametrize("name,value", [
    ("GUILD_ID", "my-guild"), ("COZE_BOT_ID", "12"), ("PORT", "http"), ("PORT", "70000"),
    ("REQUEST_OUT_TIME", "-1"), ("MAX_CHANNEL_DEL_TYPE", "SOME"), ("DISCORD_API_BASE", "discord.com"),
    ("PROXY_URL", "ftp://x"), ("BOT_TOKEN", "Bot secret.value.x"), ("CDP_STORE", "redis"),
])
def test_malformed_values_are_named_without_echoing_them(monkeypatch, name, value):
    for k, v in DISCORD.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    text = str(info.value)
    assert f"{name} is malformed" in text
    if name == "BOT_TOKEN":
        assert "secret.value" not in text


def test_default_channel_mode_needs_channel_id(monkeypatch):
    for k, v in DISCORD.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("DEFAULT_CHANNEL_ENABLE", "1")
    with pytest.raises(SettingsError, match="CHANNEL_ID is missing"):
        load_settings()
    monkeypatch.setenv("CHANNEL_ID", "110000000000000002")
    assert load_settings().DEFAULT_CHANNEL_ENABLE


def test_max_channel_del_type_is_case_insensitive(monkeypatch):
    monkeypatch.setenv("MAX_CHANNEL_DEL_TYPE", "oldest")
    assert load_settings().MAX_CHANNEL_DEL_TYPE == "OLDEST"


def test_cdp_tz_wins_over_tz_which_lambda_reserves(monkeypatch):
    monkeypatch.setenv("TZ", ":UTC")  # what Lambda sets
    assert load_settings().TZ == "UTC"
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    assert load_settings().TZ == "Asia/Shanghai"
    monkeypatch.setenv("CDP_TZ", "Europe/Berlin")
    assert load_settings().TZ == "Europe/Berlin"


def test_secrets_are_every_secret_setting_and_only_those(monkeypatch):
    from cdp.settings import SECRET_SETTINGS

    values = {**DISCORD, "PROXY_SECRET": "sk-one-111111,sk-two-222222",
              "PROXY_ADMIN_SECRET": "sk-admin-333333, sk-admin-444444",
              "NOTIFY_TELEGRAM_BOT_TOKEN": "123456:telegram-token",
              "PROXY_URL": "socks5://me:pr0xy-pass@proxy:1080", "METRICS_TOKEN": "scrape-555555"}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    s = load_settings()
    assert sorted(s.secrets()) == sorted(["u1.token.aaaaaa", "u2.token.bbbbbb", "bot.token.cccccc",
                                          "sk-one-111111", "sk-two-222222", "sk-admin-333333",
                                          "sk-admin-444444", "123456:telegram-token", "pr0xy-pass",
                                          "scrape-555555"])
    # every setting named a secret contributes, and GUILD_ID, COZE_BOT_ID... do not
    for name in SECRET_SETTINGS:
        assert any(secret in values[name] for secret in s.secrets()), name
    assert not any(secret in (s.GUILD_ID, s.COZE_BOT_ID) for secret in s.secrets())
    monkeypatch.setenv("PROXY_URL", "http://proxy:8080")
    assert "pr0xy-pass" not in load_settings().secrets() and load_settings().proxy_password is None


def test_dynamodb_settings_are_part_of_the_one_settings_model(monkeypatch):
    s = load_settings()
    assert (s.replies_table, s.state_table) == ("cdp-replies", "cdp-state")
    assert s.dynamodb_endpoint is None and s.aws_region is None
    assert s.CDP_REPLY_TTL_SECONDS == 24 * 3600
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert load_settings().aws_region == "eu-west-1"
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    assert load_settings().aws_region == "eu-central-1"


def test_stream_holdback_defaults_to_none_and_refuses_negatives(monkeypatch):
    assert load_settings().STREAM_HOLDBACK == 0  # each edit reaches the client at once
    monkeypatch.setenv("STREAM_HOLDBACK", "-1")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "STREAM_HOLDBACK" in str(info.value)


@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True),
                                           ("[::1]", True), ("localhost", True), ("LOCALHOST", True),
                                           ("0.0.0.0", False), ("::", False), ("192.168.1.5", False),
                                           ("example.com", False)])
def test_open_api_is_no_proxy_secret_beyond_loopback(monkeypatch, host, loopback):
    monkeypatch.setenv("HOST", host)
    s = load_settings()
    assert s.loopback is loopback and s.open_api is (not loopback)
    monkeypatch.setenv("PROXY_SECRET", "sk-one-111111")
    assert load_settings().open_api is False


def test_admin_keys_and_allow_open_api(monkeypatch):
    s = load_settings()
    assert s.admin_keys == [] and s.ALLOW_OPEN_API is False and s.HOST == "0.0.0.0" and s.open_api
    monkeypatch.setenv("PROXY_ADMIN_SECRET", " a1-key-1111, a2-key-2222 ,")
    monkeypatch.setenv("ALLOW_OPEN_API", "1")
    s = load_settings()
    assert s.admin_keys == ["a1-key-1111", "a2-key-2222"] and s.ALLOW_OPEN_API is True
