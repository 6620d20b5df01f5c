"""The original's /api routes over HTTP against `cdp serve` + the fake Discord: same bodies, same
status codes (200 with success false on errors, 401 on a wrong proxy-secret), hidden by
ONLY_OPENAI_API; Swagger UI at /swagger/index.html."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.support.stack import API_KEY, start_stack

pytestmark = pytest.mark.e2e

AUTH = {"proxy-secret": API_KEY}
INVALID = {"success": False, "message": "无效的参数"}


@pytest.fixture(scope="module")
def http(stack):
    with httpx.Client(base_url=stack.url, headers=AUTH, timeout=30) as client:
        yield client


def name(prefix: str = "api") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def fake_channel(fake, channel_id: str) -> dict | None:
    return next((c for c in fake.channels() if c["id"] == channel_id), None)


def test_proxy_secret_is_required(stack):
    for headers in ({}, {"proxy-secret": "wrong"}, {"Authorization": f"Bearer {API_KEY}"}):
        r = httpx.post(stack.url + "/api/channel/create", json={"name": "x"}, headers=headers)
        assert r.status_code == 401
        assert r.json() == {"success": False, "message": "无权进行此操作,未提供正确的 proxy-secret",
                            "detail": "send one of PROXY_SECRET's keys in the header proxy-secret"}
        assert httpx.get(stack.url + "/api/channel/del/all/cdp", headers=headers).status_code == 401
    # the second key works as well as the first
    r = httpx.post(stack.url + "/api/channel/create", json={"name": name()},
                   headers={"proxy-secret": "sk-test-key-2"})
    assert r.status_code == 200 and r.json()["success"] is True


def test_create_text_channel_category_and_child(stack, http):
    n = name()
    r = http.post("/api/channel/create", json={"name": n})
    assert r.status_code == 200
    body = r.json()
    assert body == {"success": True, "data": {"id": body["data"]["id"], "name": n}}
    ch = fake_channel(stack.fake, body["data"]["id"])
    assert ch["type"] == 0 and ch["name"] == n and ch["parent_id"] is None

    cat = http.post("/api/channel/create", json={"name": "Category " + n, "type": 4}).json()
    assert cat["success"] is True and cat["data"]["name"] == "Category " + n
    assert fake_channel(stack.fake, cat["data"]["id"])["type"] == 4

    child = http.post("/api/channel/create", json={"name": "child", "type": 0,
                                                   "parentId": cat["data"]["id"]}).json()
    assert child["success"] is True
    assert fake_channel(stack.fake, child["data"]["id"])["parent_id"] == cat["data"]["id"]


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1, 2]", b'{"name": 5}', b'{"name": "x", "type": "4"}',
                                 b'{"name": "x", "type": 4.5}'])
def test_create_channel_bad_bodies(http, raw):
    r = http.post("/api/channel/create", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 200
    body = r.json()
    assert {k: body[k] for k in ("success", "message")} == INVALID
    assert body["detail"]


def test_create_channel_refused_by_discord(stack, http):
    # Discord wants 1-100 characters: it answers 400 (50035); the original says 创建频道异常
    r = http.post("/api/channel/create", json={"name": ""})
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is False and body["message"] == "discord创建频道异常"
    assert "50035" in body["detail"]
    # a text channel is no category: refused before Discord is asked to create anything
    before = len(stack.fake.created_channels())
    r = http.post("/api/channel/create", json={"name": "x", "parentId": stack.fake.config.channel_id})
    assert r.status_code == 403
    assert r.json()["success"] is False and r.json()["message"] == "discord创建频道异常"
    assert "not a category" in r.json()["detail"]
    assert len(stack.fake.created_channels()) == before


def test_delete_channel(stack, http):
    cid = http.post("/api/channel/create", json={"name": name()}).json()["data"]["id"]
    r = http.get(f"/api/channel/del/{cid}")
    assert r.status_code == 200
    assert r.json() == {"success": True, "message": "discord删除频道成功"}
    assert fake_channel(stack.fake, cid) is None
    # again: the channel is gone (Discord says Unknown Channel when asked): 404, the original's body
    r = http.get(f"/api/channel/del/{cid}")
    assert r.status_code == 404
    assert r.json()["success"] is False and r.json()["message"] == "discord删除频道异常"
    assert "does not exist" in r.json()["detail"]
    r = http.get("/api/channel/del/not-an-id")
    assert r.json()["success"] is False and r.json()["message"] == "discord删除频道异常"


def test_delete_all_cdp_channels(stack, http):
    fake = stack.fake
    temp = [http.post("/api/channel/create", json={"name": name("cdp-chat")}).json()["data"]["id"]
            for _ in range(3)]
    keep = http.post("/api/channel/create", json={"name": name("notes")}).json()["data"]["id"]
    r = http.get("/api/channel/del/all/cdp")
    assert r.status_code == 200
    assert r.json() == {"success": True, "message": "discord删除频道成功"}
    ids = {c["id"] for c in fake.channels()}
    assert not ids & set(temp)
    assert keep in ids and fake.config.channel_id in ids
    assert not [c for c in fake.channels() if c["name"].startswith("cdp-chat-")]
    # nothing left to delete is still a success, as in the original
    assert http.get("/api/channel/del/all/cdp").json()["success"] is True


def test_create_thread(stack, http):
    channel = stack.fake.config.channel_id
    for duration in (60, 1440, 4320, 10080):
        r = http.post("/api/thread/create", json={"channelId": channel, "name": f"t{duration}",
                                                  "archiveDuration": duration})
        assert r.status_code == 200
        body = r.json()
        assert body == {"success": True, "data": {"id": body["data"]["id"], "name": f"t{duration}"}}
        th = fake_channel(stack.fake, body["data"]["id"])
        assert th["type"] == 11 and th["parent_id"] == channel
        assert th["thread_metadata"]["auto_archive_duration"] == duration


@pytest.mark.parametrize("duration", [None, 0, 30, 61, 2880, 20000])
def test_thread_archive_duration_is_checked(stack, http, duration):
    body = {"channelId": stack.fake.config.channel_id, "name": "t"}
    if duration is not None:
        body["archiveDuration"] = duration
    before = len(stack.fake.created_channels())
    r = http.post("/api/thread/create", json=body)
    assert r.status_code == 200
    assert r.json()["success"] is False
    assert r.json()["message"] == "线程创建时间只可为[60,1440,4320,10080]"
    assert len(stack.fake.created_channels()) == before  # Discord was never asked


def test_thread_bad_bodies_and_discord_errors(stack, http):
    r = http.post("/api/thread/create", content=b"{", headers={"Content-Type": "application/json"})
    assert {k: r.json()[k] for k in ("success", "message")} == INVALID
    r = http.post("/api/thread/create", json={"channelId": 1100000000000000002, "name": "t",
                                              "archiveDuration": 60})
    assert r.json()["message"] == "无效的参数"  # a number where the original wants a string
    r = http.post("/api/thread/create", json={"channelId": "1100000000000000999", "name": "t",
                                              "archiveDuration": 60})
    assert r.status_code == 404  # no such channel: refused before Discord is asked to create a thread
    assert r.json()["success"] is False and r.json()["message"] == "discord创建线程异常"
    # Discord refuses a thread in a thread: 200 with success false, as the original
    tid = http.post("/api/thread/create", json={"channelId": stack.fake.config.channel_id, "name": "t",
                                                "archiveDuration": 60}).json()["data"]["id"]
    r = http.post("/api/thread/create", json={"channelId": tid, "name": "t2", "archiveDuration": 60})
    assert r.status_code == 200 and r.json()["success"] is False and "50024" in r.json()["detail"]


def discord_calls(fake, method: str, channel_id: str) -> list[dict]:
    return [e for e in fake.request_log() if e["method"] == method and channel_id in e["path"]]


def test_routes_act_only_on_channels_of_the_guild(stack, http):
    """Another server's channel (the bot is a member there and could delete it), a DM, a category:
    refused with a 4xx in the original's body shape, and Discord is never asked to change anything."""
    fake, cfg = stack.fake, stack.fake.config
    cases = [(cfg.other_channel_id, 403, "another server"), (cfg.dm_channel_id, 404, "cannot see"),
             (cfg.category_id, 403, "category"), ("1100000000000000999", 404, "does not exist")]
    for cid, status, words in cases:
        r = http.get(f"/api/channel/del/{cid}")
        assert r.status_code == status, (cid, r.text)
        body = r.json()
        assert set(body) == {"success", "message", "detail"} and body["success"] is False
        assert body["message"] == "discord删除频道异常" and words in body["detail"]
        assert not discord_calls(fake, "DELETE", cid)
        r = http.post("/api/thread/create", json={"channelId": cid, "name": "t", "archiveDuration": 60})
        assert r.status_code == status and r.json()["message"] == "discord创建线程异常"
        assert not discord_calls(fake, "POST", cid)
    ids = {c["id"] for c in fake.all_channels()}
    assert {cfg.other_channel_id, cfg.dm_channel_id, cfg.category_id} <= ids
    # a thread of the guild is fine to delete
    tid = http.post("/api/thread/create", json={"channelId": cfg.channel_id, "name": "t",
                                                "archiveDuration": 60}).json()["data"]["id"]
    assert http.get(f"/api/channel/del/{tid}").json() == {"success": True, "message": "discord删除频道成功"}


def test_swagger_ui_and_openapi(stack):
    r = httpx.get(stack.url + "/swagger/index.html")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in r.text and "/openapi.json" in r.text
    spec = httpx.get(stack.url + "/openapi.json").json()
    for path in ("/api/channel/create", "/api/channel/del/{id}", "/api/channel/del/all/cdp",
                 "/api/thread/create", "/v1/chat/completions"):
        assert path in spec["paths"], path
    body = spec["paths"]["/api/thread/create"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"channelId", "name", "archiveDuration"}
    assert httpx.get(stack.url + "/swagger/doc.json").json()["paths"].keys() == spec["paths"].keys()
    assert httpx.get(stack.url + "/docs").status_code == 200


@pytest.fixture(scope="module")
def hidden(fake):
    s = start_stack("memory", fake, ONLY_OPENAI_API="1", SWAGGER_ENABLE="0")
    yield s
    s.stop()


def test_only_openai_api_hides_the_routes_and_swagger_can_be_off(hidden):
    r = httpx.post(hidden.url + "/api/channel/create", json={"name": "x"}, headers=AUTH)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found" or r.json()["error"]["type"] == "invalid_request_error"
    for path in ("/api/channel/del/all/cdp", "/api/channel/del/1100000000000000002"):
        assert httpx.get(hidden.url + path, headers=AUTH).status_code == 404
    assert httpx.post(hidden.url + "/api/thread/create", json={}, headers=AUTH).status_code == 404
    for path in ("/swagger/index.html", "/docs", "/openapi.json"):
        assert httpx.get(hidden.url + path).status_code == 404
    r = httpx.get(hidden.url + "/v1/models", headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 200
