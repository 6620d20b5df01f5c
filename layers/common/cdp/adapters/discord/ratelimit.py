"""Discord REST rate limits, driven by Discord's own headers (no hard-coded per-route limits).

`RateLimitBook` is pure bookkeeping (takes a clock, never sleeps), unit-testable without waiting:
  * (token fingerprint, route key) -> bucket id, learnt from X-RateLimit-Bucket;
  * (token fingerprint, bucket id or route key, major parameter) -> remaining / reset time, from
    X-RateLimit-Remaining and X-RateLimit-Reset-After;
  * buckets are pruned once their reset has passed and no request waits on them (amortised: a sweep
    runs when the table has doubled since the last one, so memory follows live buckets, not channels);
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
# The bucket table is swept when it reaches this size, then again each time it doubles (amortised O(1)
# per new bucket); a pruned bucket is one Discord has reset anyway, so only its learnt limit is lost.
PRUNE_MIN_SIZE = 256


@dataclass
class BucketState:
    limit: int | None = None
    remaining: int | None = None  # None = unknown (no headers seen yet)
    reset_at: float = 0.0  # clock time at which `remaining` goes back to `limit`
    waiters: int = 0  # requests sleeping until this bucket resets (pinned: never pruned meanwhile)


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
        self._prune_at = PRUNE_MIN_SIZE

    def size(self) -> int:  # not __len__: an empty book must stay truthy (`book or RateLimitBook()`)
        """How many buckets are held (bounded by the live ones, not by how many channels were used)."""
        return len(self._buckets)

    def prune(self) -> int:
        """Forget buckets whose reset has passed and on which no request waits; returns how many.
        Discord restores a bucket's full limit at its reset, so such a bucket says nothing more than an
        unknown one (whose first request goes alone until headers come back)."""
        now = self.clock()
        dead = [k for k, b in self._buckets.items() if b.reset_at <= now and b.waiters <= 0]
        for k in dead:
            del self._buckets[k]
        self._prune_at = max(PRUNE_MIN_SIZE, 2 * len(self._buckets))
        return len(dead)

    def _new_bucket(self, key: tuple[str, str, str]) -> BucketState:
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= self._prune_at:
                self.prune()
            b = self._buckets[key] = BucketState()
        return b

    def pin(self, fp: str, route: str, major: str = "") -> BucketState | None:
        """A request is about to sleep on this bucket: keep it (and its reset time) until `unpin`."""
        b = self.bucket(fp, route, major)
        if b is not None:
            b.waiters += 1
        return b

    @staticmethod
    def unpin(b: BucketState | None) -> None:
        if b is not None:
            b.waiters -= 1

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
                b = self._new_bucket(key)
                b.remaining = 0
                b.reset_at = max(b.reset_at, now + retry_after)
            return retry_after

        remaining = _float(_header(headers, "X-RateLimit-Remaining"))
        reset_after = _float(_header(headers, "X-RateLimit-Reset-After"))
        limit = _float(_header(headers, "X-RateLimit-Limit"))
        if remaining is None or reset_after is None:
            return None
        b = self._new_bucket(key)
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
        # (fp, route, major) -> [lock, requests using it]; dropped when its last request ends, so the
        # table holds only the routes in use right now
        self._locks: dict[tuple[str, str, str], list[Any]] = {}

    def lock_count(self) -> int:
        """Routes with a request running or waiting now."""
        return len(self._locks)

    def _acquire_lock(self, key: tuple[str, str, str]) -> asyncio.Lock:
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = [asyncio.Lock(), 0]
        entry[1] += 1
        return entry[0]

    def _release_lock(self, key: tuple[str, str, str]) -> None:
        entry = self._locks[key]
        entry[1] -= 1
        if entry[1] <= 0:
            del self._locks[key]

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
            pinned = self.book.pin(fp, route, major)
            try:
                await self._sleep(delay)
            finally:
                self.book.unpin(pinned)
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
        key = (fp, route, major)
        lock = self._acquire_lock(key)
        try:
            return await self._run(fp, route, major, send, body_of, lock)
        finally:
            self._release_lock(key)

    async def _run(self, fp: str, route: str, major: str, send: Callable[[], Awaitable[_Response]],
                   body_of: Callable[[_Response], Any], lock: asyncio.Lock) -> _Response:
        waited = 0.0
        attempts_429 = 0
        while True:
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
