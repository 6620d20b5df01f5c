"""/metrics (Prometheus text) after a scripted run against the fake Discord: three chats (one streamed,
one whose reply is Coze's bot-limit text), one 429 from Discord on the prompt post. The values are
checked, not only the names; and the key rules of the route (API key, admin key, METRICS_TOKEN; 401
without)."""

from __future__ import annotations

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.stack import start_stack

pytestmark = pytest.mark.timeout(120)

API_KEY, ADMIN_KEY, SCRAPE = "sk-test-key-1", "sk-admin-key-9", "scrape-token-7"
ROUTE = "/v1/chat/completions"


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: dict, name: str, **labels: str) -> float:
    return m[(name, tuple(sorted(labels.items())))]


@pytest.fixture(scope="module")
def run(fake):
    stack = start_stack("memory", fake, PROXY_ADMIN_SECRET=ADMIN_KEY, METRICS_TOKEN=SCRAPE,
                        CHANNEL_AUTO_DEL_TIME="120")  # the channels stay, to be counted
    yield stack
    stack.stop()


def scrape(stack, key: str | None = SCRAPE) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(stack.url + "/metrics", headers=headers, timeout=10)


@pytest.mark.parametrize("key,status", [(None, 401), ("wrong-key", 401), (SCRAPE, 200), (API_KEY, 403),
                                        (ADMIN_KEY, 200)])
def test_metrics_key(run, key, status):
    """PROXY_ADMIN_SECRET is set: a chat key is refused (403), as on the other admin routes."""
    r = scrape(run, key)
    assert r.status_code == status
    if status >= 400:
        assert r.json()["error"]["code"] == ("invalid_api_key" if status == 401 else "admin_key_required")
    else:
        assert r.headers["content-type"].startswith("text/plain") and "cdp_requests_total" in r.text


async def test_values_after_a_scripted_run(run):
    fake = run.fake
    before = samples(scrape(run).text)
    assert value(before, "cdp_active_streams") == 0
    assert value(before, "cdp_gateway_state", state="ready") == 1
    assert value(before, "cdp_gateway_state", state="connecting") == 0
    fake.inject_429("/messages", count=1, retry_after=0.2, method="POST")
    client = run.client()
    r1 = await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "one"}])
    assert r1.choices[0].message.content
    chunks = [c async for c in await client.chat.completions.create(
        model="gpt-4o", stream=True, messages=[{"role": "user", "content": "two"}])]
    assert any(c.choices and c.choices[0].delta.content for c in chunks)
    with pytest.raises(openai.APIStatusError) as err:
        await client.chat.completions.create(model="gpt-4o-mini", messages=[
            {"role": "user", "content": "three [[sim:error=bot_limit]]"}])
    assert err.value.status_code == 503

    m = samples(scrape(run).text)
    assert value(m, "cdp_requests_total", route=ROUTE, status="200", model="gpt-4o") == 2
    assert value(m, "cdp_requests_total", route=ROUTE, status="503", model="gpt-4o-mini") == 1
    assert value(m, "cdp_coze_errors_total", kind="bot_limit") == 1
    assert value(m, "cdp_discord_rate_limited_total", route="POST /channels/{channel_id}/messages") == 1
    # TTFT: the two answers (an error text is no first token); duration: all three
    assert value(m, "cdp_time_to_first_token_seconds_count", model="gpt-4o") == 2
    assert ("cdp_time_to_first_token_seconds_count", (("model", "gpt-4o-mini"),)) not in m
    ttft_sum = value(m, "cdp_time_to_first_token_seconds_sum", model="gpt-4o")
    dur_sum = value(m, "cdp_request_duration_seconds_sum", route=ROUTE, model="gpt-4o")
    assert 0 < ttft_sum < dur_sum
    assert value(m, "cdp_request_duration_seconds_count", route=ROUTE, model="gpt-4o") == 2
    assert value(m, "cdp_request_duration_seconds_count", route=ROUTE, model="gpt-4o-mini") == 1
    edits = value(m, "cdp_edit_latency_seconds_count")
    assert edits >= 3  # every reply was seen at least once
    assert value(m, "cdp_edit_latency_seconds_bucket", le="+Inf") == edits
    assert value(m, "cdp_active_streams") == 0
    # the in-process listener's store writes: at least one version of each of the three replies
    assert value(m, "cdp_listener_store_writes_total", outcome="written") >= 3
    assert value(m, "cdp_listener_store_healthy") == 1
    # the pool: the bot rests after its limit text; both user accounts are healthy
    assert value(m, "cdp_bots_resting") == 1
    assert value(m, "cdp_accounts", state="healthy") == len(fake.config.user_tokens)
    assert value(m, "cdp_accounts", state="dead") == 0
    assert value(m, "cdp_temp_channels_limit") == 500
    status = httpx.get(run.url + "/api/status", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()
    # three requests, three temporary channels, each released (awaiting deletion), none in use
    assert value(m, "cdp_temp_channels", state="in_use") == 0 == status["temporary_channels"]["in_use"]
    assert value(m, "cdp_temp_channels", state="pending_delete") == 3 == status["temporary_channels"]["count"]
    # the status API's recent requests agree
    recent = [r for r in status["recent_requests"] if r["route"] == ROUTE]
    assert [(r["model"], r["status"], r["error"], r["stream"]) for r in recent[:3]] == [
        ("gpt-4o-mini", 503, "bot_limit", False), ("gpt-4o", 200, None, True), ("gpt-4o", 200, None, False)]
    assert all(r["ttft"] and r["ttft"] < r["duration"] for r in recent[1:3])
    assert sum(a["requests_today"] for a in status["accounts"]) == 3
    minute = [p for p in status["history"] if p["requests"]]
    assert sum(p["requests"] for p in minute) >= 3 and sum(p["errors"] for p in minute) >= 1
