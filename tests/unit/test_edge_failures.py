"""Failures at the API edge that must not invite a duplicate post, and content parts whose `type` is
not a string (e2e: tests/e2e/test_failures.py)."""

from __future__ import annotations

import pytest
from cdp.adapters.store.memory import MemoryHealthStore
from cdp.app.conversation import ChatSpec, ConversationService
from cdp.app.errors import ErrorKind, ServiceError
from cdp.app.pool import AccountPool
from cdp.domain.discord import DiscordRateLimited
from cdp.domain.images import MediaLimits, collect_inline_media
from cdp.domain.prompt import build_prompt
from cdp.entry.openai import errors as oe
from cdp.settings import load_settings

BOT = "1300000000000000001"


class RateLimitedAfter:
    """A Discord REST port whose user posts succeed `ok` times, then are rate limited."""

    def __init__(self, ok: int) -> None:
        self.ok = ok
        self.posted: list[str] = []

    async def send_user_message(self, token, channel_id, content, *, nonce, allowed_user_ids):
        if len(self.posted) >= self.ok:
            raise DiscordRateLimited("rate limited", status=429, retry_after=100.0)
        self.posted.append(content)
        return {"id": str(1400000000000000000 + len(self.posted))}


def service(rest) -> ConversationService:
    s = load_settings(BOT_TOKEN="b.t", USER_AUTHORIZATION="u.t", GUILD_ID="1100000000000000001",
                      COZE_BOT_ID=BOT)
    pool = AccountPool(s.user_tokens, MemoryHealthStore(), tz=s.TZ, reset_time=s.DAILY_RESET_TIME)
    return ConversationService(s, rest=rest, replies=None, channels=None, pool=pool)


SPEC = ChatSpec(request_id="req_t", model="gpt-4o", messages=[], stream=False)


@pytest.mark.parametrize("ok,retryable", [(0, True), (1, False)])
async def test_a_429_once_part_of_the_prompt_is_posted_is_not_retryable(ok, retryable):
    rest = RateLimitedAfter(ok)
    svc = service(rest)
    with pytest.raises(ServiceError) as info:
        await svc._post_prompt(SPEC, "word " * 900, "1200000000000000001", BOT)  # 3 Discord messages
    assert len(rest.posted) == ok
    assert info.value.retryable is retryable and info.value.code == "discord_rate_limited"
    err = oe.from_service_error(info.value)
    assert (err.headers.get("x-should-retry") == "false") is not retryable
    if not retryable:
        assert f"after {ok} of 3 parts" in err.message


def test_a_non_retryable_unavailable_error_says_so():
    err = oe.from_service_error(ServiceError(ErrorKind.UNAVAILABLE, "busy", retry_after=5, retryable=False))
    assert err.status == 503 and err.headers["x-should-retry"] == "false"
    assert "x-should-retry" not in oe.from_service_error(ServiceError(ErrorKind.UNAVAILABLE, "busy",
                                                                      retry_after=5)).headers


def test_every_5xx_once_posted_says_do_not_retry():
    class State:
        pass

    state = State()
    assert not oe.is_posted(state)
    assert "x-should-retry" not in oe.no_retry_once_posted(oe.unavailable("x", 5), oe.is_posted(state)).headers
    oe.mark_posted(state)
    assert oe.no_retry_once_posted(oe.unavailable("x", 5), oe.is_posted(state)).headers["x-should-retry"] == "false"
    assert "x-should-retry" not in oe.no_retry_once_posted(oe.invalid_request("x"), True).headers  # 4xx: as is
    err = oe.failed_after_post("req_1")
    assert err.status == 500 and err.headers["x-should-retry"] == "false" and "req_1" in err.message


@pytest.mark.parametrize("kind", [{}, [], {"a": 1}])
def test_the_domain_ignores_a_part_type_that_is_not_a_string(kind):
    messages = [{"role": "user", "content": [{"type": kind, "text": "x"}, {"type": "text", "text": "hi"}]}]
    assert "hi" in build_prompt(messages, False)
    assert collect_inline_media(messages, False, MediaLimits()) == []


class Stalls:
    """A Discord REST port whose send never answers (the server shuts down meanwhile)."""

    async def send_user_message(self, token, channel_id, content, *, nonce, allowed_user_ids):
        import asyncio

        await asyncio.Event().wait()


async def test_a_request_cut_while_its_prompt_is_being_sent_counts_as_posted():
    """Cut mid-send (the shutdown's drain, a client gone), the prompt may be in Discord: the edge is
    told, so the 503 it answers carries x-should-retry: false (tests/faults found a retried, doubly
    posted prompt); a send Discord refused outright (429) is not a post."""
    import asyncio
    from dataclasses import replace

    marks: list[str] = []
    spec = replace(SPEC, on_posted=lambda: marks.append("posted"))
    task = asyncio.create_task(service(Stalls())._post_prompt(spec, "hello", "1200000000000000001", BOT))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert marks == ["posted"]
    marks.clear()
    with pytest.raises(ServiceError):
        await service(RateLimitedAfter(0))._post_prompt(spec, "hello", "1200000000000000001", BOT)
    assert marks == []
    await service(RateLimitedAfter(5))._post_prompt(spec, "hello", "1200000000000000001", BOT)
    assert marks == ["posted"]
