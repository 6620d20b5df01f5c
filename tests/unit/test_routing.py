"""bot_config.json: validation (errors name entry and field), discovery, and routing rules."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from cdp.adapters.botconfig import BotConfigError, find_path, load_bot_config, parse_entries
from cdp.domain.routing import AllRouteResting, BotEntry, NoRoute, Router
from cdp.settings import SettingsError, load_settings

A, B, C = "1300000000000000001", "1300000000000000002", "1300000000000000003"


def entries():
    return parse_entries([
        {"proxySecret": "k1", "cozeBotId": A, "model": ["gpt-4o", "shared"], "channelId": "1100000000000000002"},
        {"proxySecret": "k1", "cozeBotId": B, "model": ["shared"], "messageMaxToken": "500"},
        {"proxySecret": "k2", "cozeBotId": C, "model": "dall-e-3", "messageMaxToken": 100},
    ])


def test_parse_accepts_the_originals_format():
    e = entries()
    assert e[0] == BotEntry("k1", A, ("gpt-4o", "shared"), "1100000000000000002", None, 0)
    assert e[1].message_max_token == 500 and e[1].channel_id is None
    assert e[2].models == ("dall-e-3",) and e[2].message_max_token == 100 and e[2].index == 2


@pytest.mark.parametrize("data,expected", [
    ({}, ["must be a JSON list"]),
    ([], ["the list is empty"]),
    (["x"], ["entry 0: must be an object"]),
    ([{"cozeBotId": A, "model": ["m"]}], ["entry 0, field proxySecret"]),
    ([{"proxySecret": "k", "cozeBotId": "abc", "model": ["m"]}], ["entry 0, field cozeBotId"]),
    ([{"proxySecret": "k", "cozeBotId": A, "model": []}], ["entry 0, field model"]),
    ([{"proxySecret": "k", "cozeBotId": A, "model": [""]}], ["entry 0, field model"]),
    ([{"proxySecret": "k", "cozeBotId": A, "model": ["m"], "channelId": "general"}], ["entry 0, field channelId"]),
    ([{"proxySecret": "k", "cozeBotId": A, "model": ["m"], "messageMaxToken": "-3"}],
     ["entry 0, field messageMaxToken"]),
    ([{"proxySecret": "k", "cozeBotId": A, "model": ["m"]}, {"proxySecret": "", "cozeBotId": 5, "model": 3}],
     ["entry 1, field proxySecret", "entry 1, field cozeBotId", "entry 1, field model"]),
])
def test_every_problem_names_entry_and_field(data, expected):
    with pytest.raises(BotConfigError) as info:
        parse_entries(data, "cfg.json")
    assert isinstance(info.value, SettingsError)  # so `cdp serve` refuses to start
    assert len(info.value.problems) == len(expected)
    for problem, want in zip(info.value.problems, expected, strict=True):
        assert problem.startswith("bot config cfg.json: ") and want in problem


def test_discovery_order_and_explicit_path(tmp_path):
    s = load_settings()
    assert find_path(s, tmp_path) is None and load_bot_config(s, tmp_path) == []
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "bot_config.json").write_text(json.dumps([{"proxySecret": "k", "cozeBotId": B,
                                                                      "model": ["m"]}]))
    assert find_path(s, tmp_path) == tmp_path / "config" / "bot_config.json"
    (tmp_path / "data" / "config").mkdir(parents=True)
    (tmp_path / "data" / "config" / "bot_config.json").write_text(json.dumps([{"proxySecret": "k",
                                                                              "cozeBotId": A, "model": ["m"]}]))
    assert [e.coze_bot_id for e in load_bot_config(s, tmp_path)] == [A]  # the container path first
    explicit = load_settings(BOT_CONFIG_PATH="config/bot_config.json")
    assert [e.coze_bot_id for e in load_bot_config(explicit, tmp_path)] == [B]
    with pytest.raises(BotConfigError, match="file not found"):
        load_bot_config(load_settings(BOT_CONFIG_PATH="nope.json"), tmp_path)


def test_invalid_json_says_where_and_mentions_comments(tmp_path):
    p = tmp_path / "bot_config.json"
    p.write_text('[\n  {"proxySecret": "123", // API key\n  }\n]')
    with pytest.raises(BotConfigError) as info:
        load_bot_config(load_settings(BOT_CONFIG_PATH=str(p)), tmp_path)
    assert "line 2" in info.value.problems[0] and "// comments" in info.value.problems[0]


def test_router_matches_key_and_model_and_skips_resting_bots():
    r = Router(entries(), [A])
    assert r.models_for("k1") == ["gpt-4o", "shared"] and r.models_for("k2") == ["dall-e-3"]
    assert r.models_for("nope") == [] and r.models_for(None) == []
    assert r.bot_ids() == [A, B, C]
    assert r.route("gpt-4o", "k1").coze_bot_id == A
    with pytest.raises(NoRoute):
        r.route("dall-e-3", "k1")
    with pytest.raises(NoRoute):
        r.route("gpt-4o", None)
    assert r.route("shared", "k1", resting={A}).coze_bot_id == B
    with pytest.raises(AllRouteResting) as info:
        r.route("shared", "k1", resting={A, B})
    assert info.value.bot_ids == [A, B]


def test_random_pick_among_matches_uses_the_rng():
    seen = Counter(Router(entries(), [A]).route("shared", "k1").coze_bot_id for _ in range(400))
    assert set(seen) == {A, B} and min(seen.values()) > 100
    assert Router(entries(), [A], rng=lambda xs: xs[-1]).route("shared", "k1").coze_bot_id == B


def test_without_bot_config_every_model_goes_to_coze_bot_id():
    r = Router([], [A])
    assert not r.configured and r.models_for("anything") is None
    assert r.route("whatever-model", None).coze_bot_id == A
    assert r.route("gpt-4o", "k").message_max_token is None


def test_listed_served_and_routed_names_agree():
    """/v1/models (listed), /v1/models/{id} (serves) and chat (route) tell one truth."""
    from cdp.domain.routing import DEFAULT_MODELS

    default, strict, configured = Router([], [A]), Router([], [A], strict=True), Router(entries(), [A])
    assert default.listed("k") == strict.listed("k") == list(DEFAULT_MODELS)
    assert default.serves("my-model", "k") and default.route("my-model", "k").coze_bot_id == A
    assert not strict.serves("my-model", "k") and strict.serves("gpt-4o", "k")
    with pytest.raises(NoRoute):
        strict.route("my-model", "k")
    assert strict.route("gpt-4o", None).coze_bot_id == A
    assert configured.listed("k1") == ["gpt-4o", "shared"] and configured.serves("shared", "k1")
    assert not configured.serves("dall-e-3", "k1") and configured.listed("nope") == []
