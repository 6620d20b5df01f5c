"""Every bad input gets the OpenAI error shape and the right status, and posts nothing."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.support.stack import API_KEY

AUTH = {"Authorization": f"Bearer {API_KEY}"}
OK_MESSAGES = [{"role": "user", "content": "hi"}]


def assert_openai_error(r: httpx.Response, status: int, code: str | None = None, param: str | None = None):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    if code is not None:
        assert err["code"] == code
    if param is not None:
        assert err["param"] == param
    assert r.headers["x-request-id"].startswith("req_")
    return err


@pytest.fixture(scope="module")
def http(stack):
    with httpx.Client(base_url=stack.url, timeout=15) as c:
        yield c


def test_missing_and_wrong_keys_are_401(http):
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "sk-test-key-1"},
                    {"Authorization": "Basic sk-test-key-1"}):
        r = http.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": OK_MESSAGES}, headers=headers)
        assert_openai_error(r, 401, "invalid_api_key")
    assert_openai_error(http.get("/v1/models"), 401, "invalid_api_key")
    # the second key of PROXY_SECRET works too
    assert http.get("/v1/models", headers={"Authorization": "Bearer sk-test-key-2"}).status_code == 200


@pytest.mark.parametrize("body,param", [
    ({"messages": OK_MESSAGES}, "model"),
    ({"model": "gpt-4o"}, "messages"),
    ({"model": "gpt-4o", "messages": []}, "messages"),
    ({"model": "gpt-4o", "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
    ({"model": "gpt-4o", "messages": OK_MESSAGES, "n": 2}, "n"),
    ({"model": "gpt-4o", "messages": OK_MESSAGES, "channelId": "general"}, "channelId"),
    ({"model": "gpt-4o", "messages": OK_MESSAGES, "channelId": "123456789012345678\n"}, "channelId"),
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "messages.0.content"),
    ({"model": "", "messages": OK_MESSAGES}, "model"),
])
def test_invalid_bodies_are_400_with_the_param(http, body, param):
    err = assert_openai_error(http.post("/v1/chat/completions", json=body, headers=AUTH), 400)
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param or (err["param"] or "").startswith(param)


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[1,2]", b"\xff\xfe"])
def test_unparseable_bodies_are_400(http, raw):
    r = http.post("/v1/chat/completions", content=raw, headers={**AUTH, "Content-Type": "application/json"})
    assert_openai_error(r, 400)


def test_bad_out_time_header_is_400(http):
    r = http.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": OK_MESSAGES},
                  headers={**AUTH, "out-time": "soon"})
    assert_openai_error(r, 400, param="out-time")


def test_unknown_route_and_method_and_model(http):
    assert_openai_error(http.get("/v1/nothing", headers=AUTH), 404)
    assert_openai_error(http.get("/v1/chat/completions", headers=AUTH), 405)
    # Without bot_config.json every name is served by COZE_BOT_ID (STRICT_MODELS=1 refuses them:
    # tests/e2e/test_params.py), and /v1/models/{id} agrees with chat.
    assert http.get("/v1/models/no-such-model", headers=AUTH).json()["id"] == "no-such-model"
    r = http.post("/v1/chat/completions", headers=AUTH,
                  json={"model": "no-such-model", "messages": OK_MESSAGES, "max_tokens": 1})
    assert r.status_code == 200 and r.json()["model"] == "no-such-model", r.text


def test_models_list_and_get(stack, http):
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=API_KEY, max_retries=0)
    models = client.models.list().data
    assert models and all(m.object == "model" and m.created > 0 and m.owned_by for m in models)
    assert client.models.retrieve(models[0].id).id == models[0].id


def test_cors_preflight_allows_sdk_headers(http):
    r = http.options("/v1/chat/completions", headers={
        "Origin": "https://chat.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-stainless-os"})
    assert r.status_code == 200
    assert "x-stainless-os" in r.headers["access-control-allow-headers"].lower()
    assert r.headers.get("access-control-allow-credentials") != "true"


def test_healthz_reports_ready(http):
    r = http.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert r.headers["x-request-id"]


def test_bad_inputs_posted_nothing(stack, http):
    before = sum(len(stack.fake.messages(c["id"])) for c in stack.fake.created_channels())
    http.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": []}, headers=AUTH)
    http.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": OK_MESSAGES}, headers={})
    after = sum(len(stack.fake.messages(c["id"])) for c in stack.fake.created_channels())
    assert after == before


def other_places(cfg) -> list[tuple[str, str, str]]:
    """(channel id, error code, words of the message): channels outside GUILD_ID, or not for messages."""
    return [(cfg.other_channel_id, "channel_not_allowed", "another server"),  # the accounts are members
            (cfg.dm_channel_id, "channel_not_found", "cannot see"),  # a DM between the two accounts
            (cfg.category_id, "channel_not_allowed", "category")]


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/images/generations"])
def test_channel_id_outside_the_guild_is_refused_and_nothing_is_posted(stack, http, route):
    """The user accounts could post into another server or their DMs: a channelId must be a text channel
    or thread of GUILD_ID (asked of Discord once, then cached)."""
    fake, cfg = stack.fake, stack.fake.config

    def lookups() -> int:
        return sum(1 for e in fake.request_log() if e["method"] == "GET"
                   and e["path"].endswith(f"/channels/{cfg.other_channel_id}"))

    asked = lookups()
    for cid, code, words in other_places(cfg):
        body = ({"model": "gpt-4o", "messages": OK_MESSAGES} if route.endswith("completions")
                else {"prompt": "a cat"})
        for _ in range(2):  # the second time from the cache: the same answer
            r = http.post(route, json={**body, "channelId": cid}, headers=AUTH)
            err = assert_openai_error(r, 400, code, "channelId")
            assert words in err["message"] and cid in err["message"]
        assert fake.messages(cid) == []
        assert not [e for e in fake.request_log() if e["method"] == "POST" and cid in e["path"]]
    assert lookups() - asked <= 1  # Discord was asked once at most (twice refused, per route)
