"""Start-up: refusing bad settings, the demo mode, and fatal gateway problems reported, never looped."""

from __future__ import annotations

import json
import time

import httpx
import openai
from cdp.sim import FakeDiscord

from tests.support.fake import fast_sim_config
from tests.support.proc import CdpProcess, free_port, settings_env


def test_partial_settings_refuse_to_start_naming_each_problem():
    env = {"BOT_TOKEN": "abc.def.ghi", "GUILD_ID": "12", "PORT": str(free_port())}
    proc = CdpProcess(["serve"], env).start()
    try:
        assert proc.wait_exit(30) == 2
    finally:
        proc.stop()
    out = proc.log()
    assert "USER_AUTHORIZATION is missing" in out
    assert "COZE_BOT_ID is missing" in out
    assert "GUILD_ID is malformed" in out
    assert "abc.def.ghi" not in out  # a malformed value is never echoed: it may be a secret


def test_demo_mode_without_discord_settings_answers_and_says_so():
    port = free_port()
    proc = CdpProcess(["serve"], {"PORT": str(port), "HOST": "127.0.0.1"}, port).start()
    try:
        health = proc.wait_healthy()
        assert health["mode"] == "demo" and "DEMO MODE" in health["warning"]
        assert "DEMO MODE" in proc.log()
        curl = next(line for line in proc.log().splitlines() if line.strip().startswith("curl "))
        assert f"http://127.0.0.1:{port}/v1/chat/completions" in curl
        client = openai.OpenAI(base_url=proc.url + "/v1", api_key="anything", max_retries=0, timeout=60)
        reply = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hello"}])
        assert "simulated Coze bot" in reply.choices[0].message.content
        # A two-turn tool-using agent completes against the demo server (issue 13): a tool call, then
        # the answer from the tool's result.
        weather = {"type": "function", "function": {
            "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                  "required": ["city"]}}}
        messages = [{"role": "user", "content": "What is the weather in Paris?"}]
        first = client.chat.completions.create(model="gpt-4o", messages=messages, tools=[weather])
        (call,) = first.choices[0].message.tool_calls
        assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
        assert "city" in json.loads(call.function.arguments)
        messages += [first.choices[0].message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": "18 C, light rain"}]
        second = client.chat.completions.create(model="gpt-4o", messages=messages, tools=[weather])
        assert second.choices[0].finish_reason == "stop" and "18 C, light rain" in second.choices[0].message.content
    finally:
        proc.stop()


def _wait_failed(proc: CdpProcess, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    body = {}
    while time.monotonic() < deadline:
        try:
            r = httpx.get(proc.url + "/healthz", timeout=2)
            body = r.json()
            if r.status_code == 503 and body["gateway"]["state"] == "failed":
                return body
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"listener did not report failure: {body}\n{proc.log()}")


def test_bad_bot_token_stops_the_listener_with_a_clear_message():
    with FakeDiscord(fast_sim_config()) as fake:
        port = free_port()
        env = settings_env(fake, PORT=str(port), HOST="127.0.0.1")
        fake.revoke_token(fake.config.bot_token)
        before = fake.gateway_connections()
        proc = CdpProcess(["serve"], env, port).start()
        try:
            body = _wait_failed(proc)
            assert "BOT_TOKEN" in body["reason"]
            time.sleep(3)  # long enough for any reconnect loop to show itself
            assert fake.gateway_connections() - before <= 2
            assert fake.identify_count() == 0
            assert "BOT_TOKEN" in proc.log()
            assert fake.config.bot_token not in proc.log()
        finally:
            proc.stop()


def test_message_content_intent_disabled_says_exactly_what_to_fix():
    with FakeDiscord(fast_sim_config(app_flags=0)) as fake:
        port = free_port()
        proc = CdpProcess(["serve"], settings_env(fake, PORT=str(port), HOST="127.0.0.1"), port).start()
        try:
            body = _wait_failed(proc)
            assert body["gateway"]["close_code"] == 4014
            assert "Message Content" in body["reason"]
            time.sleep(2)
            assert fake.gateway_connections() <= 2
        finally:
            proc.stop()


def test_open_api_beyond_loopback_refuses_to_start_naming_the_fix():
    with FakeDiscord(fast_sim_config()) as fake:
        for host in ("0.0.0.0", "::"):
            proc = CdpProcess(["serve"], settings_env(fake, PORT=str(free_port()), HOST=host, PROXY_SECRET="")).start()
            try:
                assert proc.wait_exit(30) == 2
            finally:
                proc.stop()
            out = proc.log()
            assert "refusing to start an open API" in out and "PROXY_SECRET" in out and "ALLOW_OPEN_API=1" in out
            assert fake.gateway_connections() == 0  # nothing was started
            for secret in [fake.config.bot_token, *fake.config.user_tokens]:
                assert secret not in out


def test_allow_open_api_starts_but_admin_routes_still_need_a_key():
    with FakeDiscord(fast_sim_config()) as fake:
        port = free_port()
        env = settings_env(fake, PORT=str(port), HOST="0.0.0.0", PROXY_SECRET="", ALLOW_OPEN_API="1")
        proc = CdpProcess(["serve"], env, port).start()
        try:
            proc.wait_healthy()
            assert "open API" in proc.log()
            models = httpx.get(proc.url + "/v1/models", timeout=10)
            assert models.status_code == 200  # the chat API is open, as asked
            status = httpx.get(proc.url + "/api/status", headers={"Authorization": "Bearer anything"}, timeout=10)
            assert status.status_code == 401 and "none is configured" in status.json()["error"]["message"]
            channels = len(fake.channels())
            for path in ("/api/channel/del/all/cdp", f"/api/channel/del/{fake.config.channel_id}"):
                r = httpx.get(proc.url + path, headers={"proxy-secret": "anything"}, timeout=10)
                assert r.status_code == 401 and r.json()["success"] is False
            r = httpx.post(proc.url + "/api/channel/create", json={"name": "x"}, timeout=10)
            assert r.status_code == 401
            assert len(fake.channels()) == channels  # nothing created or deleted
        finally:
            proc.stop()


def test_demo_mode_is_exempt_and_its_banner_never_prints_a_key():
    port = free_port()
    proc = CdpProcess(["serve"], {"PORT": str(port), "HOST": "0.0.0.0", "PROXY_SECRET": "sk-demo-key-123456"},
                      port).start()
    try:
        proc.wait_healthy()
        curl = next(line for line in proc.log().splitlines() if line.strip().startswith("curl "))
        assert "Bearer <a PROXY_SECRET key>" in curl
        assert "sk-demo-key-123456" not in proc.log()
    finally:
        proc.stop()
