"""Rate-limit bookkeeping (pure, fake clock) and the async limiter (fake sleep)."""

from __future__ import annotations

import pytest
from cdp.adapters.discord.ratelimit import RateLimitBook, RateLimiter
from cdp.domain.discord import DiscordRateLimited

ROUTE = "POST /channels/{channel_id}/messages"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def hdr(remaining, reset_after, limit=5, bucket="abc"):
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset-After": str(reset_after),
        "X-RateLimit-Bucket": bucket,
    }


def test_unknown_bucket_goes_immediately():
    book = RateLimitBook(Clock())
    assert book.reserve("tok:1", ROUTE, "c1") == 0.0
    assert not book.known("tok:1", ROUTE, "c1")


def test_remaining_zero_waits_until_reset():
    clock = Clock()
    book = RateLimitBook(clock)
    assert book.reserve("tok:1", ROUTE, "c1") == 0.0
    book.update("tok:1", ROUTE, "c1", 200, hdr(0, 2.5))
    assert book.reserve("tok:1", ROUTE, "c1") == pytest.approx(2.5)
    clock.t += 1.0
    assert book.reserve("tok:1", ROUTE, "c1") == pytest.approx(1.5)
    clock.t += 1.5
    assert book.reserve("tok:1", ROUTE, "c1") == 0.0  # window reset: limit available again
    assert book.bucket("tok:1", ROUTE, "c1").remaining == 4


def test_remaining_counts_down_locally():
    clock = Clock()
    book = RateLimitBook(clock)
    book.update("tok:1", ROUTE, "c1", 200, hdr(2, 5.0))
    assert book.reserve("tok:1", ROUTE, "c1") == 0.0
    assert book.reserve("tok:1", ROUTE, "c1") == 0.0
    assert book.reserve("tok:1", ROUTE, "c1") == pytest.approx(5.0)


def test_buckets_are_per_token_and_major_param():
    book = RateLimitBook(Clock())
    book.update("tok:1", ROUTE, "c1", 200, hdr(0, 5.0))
    assert book.reserve("tok:1", ROUTE, "c1") > 0
    assert book.reserve("tok:1", ROUTE, "c2") == 0.0  # other channel
    assert book.reserve("tok:2", ROUTE, "c1") == 0.0  # other token


def test_shared_bucket_id_across_routes():
    book = RateLimitBook(Clock())
    other = "PATCH /channels/{channel_id}/messages/{message_id}"
    book.update("tok:1", ROUTE, "c1", 200, hdr(0, 3.0, bucket="shared"))
    book.update("tok:1", other, "c1", 200, hdr(0, 3.0, bucket="shared"))
    assert book.reserve("tok:1", other, "c1") == pytest.approx(3.0)


def test_429_uses_body_retry_after():
    clock = Clock()
    book = RateLimitBook(clock)
    ra = book.update("tok:1", ROUTE, "c1", 429, {"Retry-After": "9"}, {"retry_after": 1.25, "global": False})
    assert ra == 1.25
    assert book.reserve("tok:1", ROUTE, "c1") == pytest.approx(1.25)
    assert book.reserve("tok:1", ROUTE, "c2") == 0.0  # not global


def test_429_falls_back_to_retry_after_header():
    book = RateLimitBook(Clock())
    assert book.update("tok:1", ROUTE, "c1", 429, {"Retry-After": "3"}, None) == 3.0


def test_global_429_blocks_every_route_of_that_token_only():
    clock = Clock()
    book = RateLimitBook(clock)
    book.update(
        "tok:1", ROUTE, "c1", 429, {"X-RateLimit-Global": "true"}, {"retry_after": 2.0, "global": True}
    )
    assert book.reserve("tok:1", "GET /guilds/{guild_id}", "g") == pytest.approx(2.0)
    assert book.reserve("tok:2", ROUTE, "c1") == 0.0
    clock.t += 2.0
    assert book.reserve("tok:1", "GET /guilds/{guild_id}", "g") == 0.0


def test_global_cap_per_second():
    clock = Clock()
    book = RateLimitBook(clock, global_limit=50)
    for i in range(50):
        assert book.reserve("tok:1", f"GET /r{i}", "") == 0.0
    wait = book.reserve("tok:1", "GET /x", "")
    assert 0 < wait <= 1.0
    clock.t += 1.0
    assert book.reserve("tok:1", "GET /x", "") == 0.0


class FakeResp:
    def __init__(self, status, headers=None, body=None):
        self.status_code = status
        self.headers = headers or {}
        self.body = body

    def json(self):
        return self.body


async def test_limiter_retries_429_after_retry_after():
    clock = Clock()
    slept: list[float] = []

    async def sleep(s):
        slept.append(s)
        clock.t += s

    limiter = RateLimiter(RateLimitBook(clock), max_wait=10, sleep=sleep)
    responses = [FakeResp(429, {}, {"retry_after": 0.75, "global": False}), FakeResp(200, hdr(4, 5.0))]

    async def send():
        return responses.pop(0)

    resp = await limiter.run("tok:1", ROUTE, "c1", send, body_of=lambda r: r.body)
    assert resp.status_code == 200
    assert slept == [pytest.approx(0.75)]


async def test_limiter_bounded_wait_raises_rate_limited():
    clock = Clock()

    async def sleep(s):
        clock.t += s

    book = RateLimitBook(clock)
    book.update("tok:1", ROUTE, "c1", 200, hdr(0, 30.0))
    limiter = RateLimiter(book, max_wait=5, sleep=sleep)

    async def send():  # pragma: no cover - must not be called
        raise AssertionError("sent while rate limited")

    with pytest.raises(DiscordRateLimited) as ei:
        await limiter.run("tok:1", ROUTE, "c1", send)
    assert ei.value.retry_after == pytest.approx(30.0)


async def test_limiter_gives_back_429_when_retry_after_exceeds_budget():
    clock = Clock()

    async def sleep(s):  # pragma: no cover
        clock.t += s

    limiter = RateLimiter(RateLimitBook(clock), max_wait=1, sleep=sleep)
    calls = 0

    async def send():
        nonlocal calls
        calls += 1
        return FakeResp(429, {}, {"retry_after": 50, "global": True})

    resp = await limiter.run("tok:1", ROUTE, "c1", send, body_of=lambda r: r.body)
    assert resp.status_code == 429 and calls == 1


async def test_limiter_waits_when_remaining_zero():
    clock = Clock()
    slept: list[float] = []

    async def sleep(s):
        slept.append(s)
        clock.t += s

    limiter = RateLimiter(RateLimitBook(clock), max_wait=10, sleep=sleep)
    seq = [FakeResp(200, hdr(0, 2.0)), FakeResp(200, hdr(4, 2.0))]

    async def send():
        return seq.pop(0)

    await limiter.run("tok:1", ROUTE, "c1", send)
    await limiter.run("tok:1", ROUTE, "c1", send)
    assert slept == [pytest.approx(2.0)]


# -- bounded tables (issue 12: one bucket per channel, never pruned) ------------------------------------
def test_bucket_table_stays_bounded_over_many_channels():
    clock = Clock()
    book = RateLimitBook(clock)
    scanned = 0
    prune = book.prune

    def counting_prune():
        nonlocal scanned
        scanned += book.size()
        return prune()

    book.prune = counting_prune
    peak = 0
    n = 100_000
    for i in range(n):  # one new channel per request, as `cdp serve` does; each resets within 2 s
        assert book.reserve("tok:1", ROUTE, f"c{i}") == 0.0
        book.update("tok:1", ROUTE, f"c{i}", 200, hdr(4, 2.0))
        clock.t += 0.025  # 40 requests per second (under the global 50/s)
        peak = max(peak, book.size())
    assert peak <= 512  # live buckets (~100 within 2 s) times two, not 100k
    assert scanned <= 3 * n  # amortised: sweeps cost O(1) per new bucket, not a scan per request


def test_pruned_bucket_keeps_discord_semantics():
    clock = Clock()
    book = RateLimitBook(clock)
    book.update("tok:1", ROUTE, "c1", 200, hdr(0, 5.0, bucket="shared"))
    book.update("tok:1", ROUTE, "c2", 200, hdr(1, 5.0, bucket="shared"))
    clock.t += 6.0  # both reset
    assert book.prune() == 2 and book.size() == 0
    # the route -> bucket id mapping survives: a new header under that id lands in the same bucket
    assert book.bucket_key("tok:1", ROUTE, "c1") == ("tok:1", "b:shared", "c1")
    assert book.reserve("tok:1", ROUTE, "c1") == 0.0  # reset passed: a pruned bucket goes at once
    # the global 429 is not a bucket: it holds whatever is pruned
    book.update("tok:1", ROUTE, "c1", 429, {}, {"retry_after": 3.0, "global": True})
    assert book.prune() == 0
    assert book.reserve("tok:1", ROUTE, "c9") == pytest.approx(3.0)


def test_bucket_not_pruned_before_reset_or_while_pinned():
    clock = Clock()
    book = RateLimitBook(clock)
    book.update("tok:1", ROUTE, "c1", 200, hdr(0, 5.0))
    assert book.prune() == 0  # not reset yet: still says "wait"
    pinned = book.pin("tok:1", ROUTE, "c1")
    clock.t += 6.0
    assert book.prune() == 0  # a request sleeps on it
    book.unpin(pinned)
    assert book.prune() == 1


async def test_limiter_lock_table_empties_after_requests():
    clock = Clock()

    async def sleep(s):
        clock.t += s

    limiter = RateLimiter(RateLimitBook(clock), max_wait=10, sleep=sleep)

    async def send():
        return FakeResp(200, hdr(4, 1.0))

    for i in range(2000):
        await limiter.run("tok:1", ROUTE, f"c{i}", send)
    assert limiter.lock_count() == 0
