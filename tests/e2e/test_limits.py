"""REQUEST_RATE_LIMIT per client IP: OpenAI-shaped 429 + Retry-After; X-Forwarded-For only when trusted."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.support.stack import API_KEY, MODES, start_stack

LIMIT = 4
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def same_window() -> None:
    """Start a burst early in a one-minute window so it does not straddle two windows."""
    left = 60 - time.time() % 60
    if left < 8:
        time.sleep(left + 0.05)


@pytest.fixture(scope="module", params=MODES)
def limited(request, fake):
    s = start_stack(request.param, fake, REQUEST_RATE_LIMIT=str(LIMIT))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def behind_proxy(fake):
    s = start_stack("memory", fake, REQUEST_RATE_LIMIT=str(LIMIT), TRUST_PROXY_HEADERS="true")
    yield s
    s.stop()


async def test_over_the_limit_is_429_in_openai_shape_with_retry_after(limited):
    same_window()
    async with openai.AsyncOpenAI(base_url=limited.url + "/v1", api_key=API_KEY, max_retries=0) as client:
        for _ in range(LIMIT):
            await client.models.list()
        with pytest.raises(openai.RateLimitError) as info:
            await client.models.list()
    err = info.value
    assert err.status_code == 429 and err.code == "rate_limit_exceeded"
    assert 1 <= int(err.response.headers["Retry-After"]) <= 60
    assert err.response.headers["x-request-id"].startswith("req_")
    # a spoofed X-Forwarded-For changes nothing unless TRUST_PROXY_HEADERS says so
    r = httpx.get(limited.url + "/v1/models", headers={**AUTH, "X-Forwarded-For": "203.0.113.9"})
    assert r.status_code == 429
    # health checks are never limited
    assert httpx.get(limited.url + "/healthz").status_code == 200
    # a browser still sees the 429 (CORS headers present)
    r = httpx.get(limited.url + "/v1/models", headers={**AUTH, "Origin": "https://app.example"})
    assert r.status_code == 429 and r.headers["access-control-allow-origin"] == "*"
    assert r.json()["error"]["type"] == "requests"


def test_trusted_proxy_header_identifies_the_client_by_its_last_hop(behind_proxy):
    same_window()
    url = behind_proxy.url + "/v1/models"
    for _ in range(LIMIT):
        assert httpx.get(url, headers={**AUTH, "X-Forwarded-For": "198.51.100.1"}).status_code == 200
    assert httpx.get(url, headers={**AUTH, "X-Forwarded-For": "198.51.100.1"}).status_code == 429
    # the proxy appends the address it saw: a client's own (spoofed) first hop does not help
    spoofed = {**AUTH, "X-Forwarded-For": "10.9.9.9, 198.51.100.1"}
    assert httpx.get(url, headers=spoofed).status_code == 429
    # another client behind the same proxy has its own budget
    assert httpx.get(url, headers={**AUTH, "X-Forwarded-For": "198.51.100.2"}).status_code == 200
