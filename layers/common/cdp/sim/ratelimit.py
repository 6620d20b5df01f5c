"""REST rate limits, shaped like Discord's (per-route buckets keyed by major parameter + a global limit)."""

from __future__ import annotations

import hashlib
import math
import time
from typing import TYPE_CHECKING

from .util import fingerprint

if TYPE_CHECKING:
    from .core import Sim


class RateLimited(Exception):
    def __init__(self, retry_after: float, is_global: bool, scope: str, headers: dict[str, str]) -> None:
        super().__init__("rate limited")
        self.retry_after = retry_after
        self.is_global = is_global
        self.scope = scope
        self.headers = headers

    def body(self) -> dict:
        return {"message": "You are being rate limited.", "retry_after": round(self.retry_after, 3), "global": self.is_global}

    def all_headers(self) -> dict[str, str]:
        h = dict(self.headers)
        h["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        h["X-RateLimit-Scope"] = self.scope
        if self.is_global:
            h["X-RateLimit-Global"] = "true"
        return h


class RateLimiter:
    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.windows: dict[tuple[str, str], list[float]] = {}  # (bucket hash, major) -> [start, count]
        self.global_windows: dict[str, list[float]] = {}

    def limits_for(self, route_key: str) -> tuple[int, float]:
        return self.sim.cfg.rate_limits.get(route_key, self.sim.cfg.default_rate_limit)

    @staticmethod
    def bucket_hash(route_key: str, limit: int, per: float) -> str:
        return hashlib.sha1(f"{route_key}|{limit}|{per}".encode()).hexdigest()[:32]

    def check(self, token: str | None, route_key: str, major: str) -> dict[str, str]:
        """Count a request; return the X-RateLimit headers, or raise RateLimited."""
        now = time.time()
        # global limit (per token)
        if token is not None:
            gkey = fingerprint(token) or ""
            gw = self.global_windows.get(gkey)
            if gw is None or now >= gw[0] + 1.0:
                gw = self.global_windows[gkey] = [now, 0]
            if gw[1] >= self.sim.cfg.global_rate_limit:
                raise RateLimited(gw[0] + 1.0 - now, True, "global", {})
            gw[1] += 1
        limit, per = self.limits_for(route_key)
        bucket = self.bucket_hash(route_key, limit, per)
        w = self.windows.get((bucket, major))
        if w is None or now >= w[0] + per:
            w = self.windows[(bucket, major)] = [now, 0]
        reset = w[0] + per
        if w[1] >= limit:
            headers = self._headers(limit, 0, reset, now, bucket)
            raise RateLimited(reset - now, False, "user", headers)
        w[1] += 1
        return self._headers(limit, int(limit - w[1]), reset, now, bucket)

    @staticmethod
    def _headers(limit: int, remaining: int, reset: float, now: float, bucket: str) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": f"{reset:.3f}",
            "X-RateLimit-Reset-After": f"{max(0.0, reset - now):.3f}",
            "X-RateLimit-Bucket": bucket,
        }
