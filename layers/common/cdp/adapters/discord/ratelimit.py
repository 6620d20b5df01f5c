"""Discord REST rate limits, driven by Discord's own headers (no hard-coded per-route limits).

`RateLimitBook` is pure bookkeeping (takes a clock, never sleeps), unit-testable without waiting:
  * (token fingerprint, route key) -> bucket id, learnt from X-RateLimit-Bucket;
  * (token fingerprint, bucket id or route key, major parameter) -> remaining / reset time, from
    X-RateLimit-Remaining and X-RateLimit-Reset-After;
  * per token: a global block (429 with `global: true` / X-RateLimit-Global / scope global) and a
    sliding one-second window capping requests at `global_limit` per second (50 for bot tokens).

`RateLimiter` is the asyncio side: it waits as the book says (bounded by a budget), sends, feeds the
response back, and retries 429s after `retry_after`. Giving up raises DiscordRateLimited.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cdp.domain.discord import DiscordRateLimited

log = logging.getLogger("cdp.adapters.discord.ratelimit")

GLOBAL_LIMIT_PER_SECOND = 50
MAX_429_RETRIES = 5


@dataclass
class BucketState:
    limit: int | None = None
    remaining: int | None = None  # None = unknown (no headers seen yet)
    reset_at: float = 0.0  # clock time at which `remaining` goes back to `limit`


def _header(headers: Mapping[str, str], name: str) -> str | None:
    v = headers.get(name)
    if v is None:
        v = headers.get(name.lower())
    return v


def _float(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


class RateLimitBook:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        global_limit: int = GLOBAL_LIMIT_PER_SECOND,
        global_window: float = 1.0,
    ) -> None:
        self.clock = clock
        self.global_limit = global_limit
        self.global_window = global_window
        self._route_bucket: dict[tuple[str, str], str] = {}
        self._buckets: dict[tuple[str, str, str], BucketState] = {}
        self._global_until: dict[str, float] = {}
        self._sent: dict[str, deque[float]] = {}

    # -- keys --------------------------------------------------------------------------------
    def bucket_key(self, fp: str, route: str, major: str = "") -> tuple[str, str, str]:
        bucket_id = self._route_bucket.get((fp, route))
        return (fp, f"b:{bucket_id}" if bucket_id else f"r:{route}", major)

    def bucket(self, fp: str, route: str, major: str = "") -> BucketState | None:
        return self._buckets.get(self.bucket_key(fp, route, major))

    def known(self, fp: str, route: str, major: str = "") -> bool:
        b = self.bucket(fp, route, major)
        return b is not None and b.remaining is not None

    # -- before a request --------------------------------------------------------------------
    def reserve(self, fp: str, route: str, major: str = "") -> float:
        """0.0 = go now (a slot is taken); > 0 = wait that many seconds, then ask again."""
        now = self.clock()
        until = self._global_until.get(fp, 0.0)
        if until > now:
            return until - now
        b = self._buckets.get(self.bucket_key(fp, route, major))
        if b is not None and b.remaining is not None:
            if b.reset_at <= now:
                # the window is over: the full limit is available again (unknown if no limit seen)
                b.remaining = b.limit
                b.reset_at = 0.0
            elif b.remaining <= 0:
                return b.reset_at - now
        sent = self._sent.setdefault(fp, deque())
        while sent and sent[0] <= now - self.global_window:
            sent.popleft()
        if len(sent) >= self.global_limit:
            return max(sent[0] + self.global_window - now, 0.001)
        sent.append(now)
        if b is not None and b.remaining is not None:
            b.remaining -= 1
        return 0.0

    # -- after a response --------------------------------------------------------------------
    def update(
        self, fp: str, route: str, major: str, status: int, headers: Mapping[str, str], body: Any = None
    ) -> float | None:
        """Record a response's rate-limit headers. Returns retry_after (s) for a 429, else None."""
        now = self.clock()
        bucket_id = _header(headers, "X-RateLimit-Bucket")
        if bucket_id:
            old_key = self.bucket_key(fp, route, major)
            self._route_bucket[(fp, route)] = bucket_id
            new_key = self.bucket_key(fp, route, major)
            if old_key != new_key and old_key in self._buckets and new_key not in self._buckets:
                self._buckets[new_key] = self._buckets.pop(old_key)
        key = self.bucket_key(fp, route, major)

        if status == 429:
            body = body if isinstance(body, dict) else {}
            retry_after = _float(body.get("retry_after"))
            if retry_after is None:
                retry_after = _float(_header(headers, "Retry-After"))
            if retry_after is None:
                retry_after = _float(_header(headers, "X-RateLimit-Reset-After"))
            if retry_after is None:
                retry_after = 1.0
            retry_after = max(0.0, retry_after)
            scope = (_header(headers, "X-RateLimit-Scope") or "").lower()
            is_global = (
                bool(body.get("global"))
                or (_header(headers, "X-RateLimit-Global") or "").lower() == "true"
                or scope == "global"
            )
            if is_global:
                self._global_until[fp] = max(self._global_until.get(fp, 0.0), now + retry_after)
            else:
                b = self._buckets.setdefault(key, BucketState())
                b.remaining = 0
                b.reset_at = max(b.reset_at, now + retry_after)
            return retry_after

        remaining = _float(_header(headers, "X-RateLimit-Remaining"))
        reset_after = _float(_header(headers, "X-RateLimit-Reset-After"))
        limit = _float(_header(headers, "X-RateLimit-Limit"))
        if remaining is None or reset_after is None:
            return None
        b = self._buckets.setdefault(key, BucketState())
        new_reset = now + reset_after
        if limit is not None:
            b.limit = int(limit)
        same_window = b.remaining is not None and b.reset_at > now and abs(new_reset - b.reset_at) < 0.5
        if same_window:
            # responses may arrive out of order; local count already includes requests in flight
            b.remaining = min(b.remaining, int(remaining))  # type: ignore[type-var]
            b.reset_at = max(b.reset_at, new_reset)
        else:
            b.remaining = int(remaining)
            b.reset_at = new_reset
        return None


class _Response(Protocol):
    status_code: int
    headers: Mapping[str, str]


class RateLimiter:
    """Waits as the book says, sends, records, retries 429s. One per process, shared by all tokens."""

    def __init__(
        self,
        book: RateLimitBook | None = None,
        *,
        max_wait: float = 60.0,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.book = book or RateLimitBook()
        self.max_wait = max_wait
        self._sleep = sleep
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}

    def _lock(self, fp: str, route: str, major: str) -> asyncio.Lock:
        key = (fp, route, major)
        lock = self._locks.get(key)
        if lock is None:
            if len(self._locks) > 10_000:
                for k in [k for k, v in self._locks.items() if not v.locked()]:
                    del self._locks[k]
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def _wait(self, fp: str, route: str, major: str, waited: float) -> float:
        while True:
            delay = self.book.reserve(fp, route, major)
            if delay <= 0:
                return waited
            if waited + delay > self.max_wait:
                raise DiscordRateLimited(
                    "rate limited; not waiting longer",
                    status=429,
                    retry_after=delay,
                    route=route,
                    token_fp=fp,
                )
            log.debug("rate limit: waiting %.3fs on %s [%s]", delay, route, fp)
            await self._sleep(delay)
            waited += delay

    async def run(
        self,
        fp: str,
        route: str,
        major: str,
        send: Callable[[], Awaitable[_Response]],
        body_of: Callable[[_Response], Any] = lambda r: None,
    ) -> _Response:
        """Send (via `send`) when allowed; retry 429s. Returns the first non-429 response."""
        waited = 0.0
        attempts_429 = 0
        while True:
            lock = self._lock(fp, route, major)
            await lock.acquire()
            held = True
            try:
                waited = await self._wait(fp, route, major, waited)
                if self.book.known(fp, route, major):
                    # limits known: let the next request of this bucket go while this one is in flight
                    lock.release()
                    held = False
                resp = await send()
                retry_after = self.book.update(
                    fp,
                    route,
                    major,
                    resp.status_code,
                    resp.headers,
                    body_of(resp) if resp.status_code == 429 else None,
                )
            finally:
                if held:
                    lock.release()
            if resp.status_code != 429:
                return resp
            attempts_429 += 1
            retry_after = retry_after or 0.0
            if attempts_429 > MAX_429_RETRIES or waited + retry_after > self.max_wait:
                return resp  # caller maps it to DiscordRateLimited with retry_after
            log.warning("429 on %s [%s]: retrying after %.3fs", route, fp, retry_after)
            # the book now blocks this bucket (or the whole token) until retry_after: _wait sleeps it
