"""Load: CDP_LOAD_N (150 in `make test`, 500 in `make soak`) conversations at once in one `cdp serve`,
half streamed, each in its own temporary channel, every answer exactly its own scripted reply (tests/load/driver.py). Afterwards
the process is back where it was: no request in flight, every temporary channel deleted, asyncio
tasks and file descriptors at their idle count (read from /api/status's `process`)."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from tests.load.driver import load_fake, load_stack, run_concurrent, settle
from tests.support import tables

pytestmark = pytest.mark.e2e

N = int(os.environ.get("CDP_LOAD_N", "150"))  # `make soak`: 500


def test_concurrent_conversations_without_cross_talk():
    fake = load_fake()
    stack = load_stack(fake)
    try:
        check_concurrent(stack, fake)
    finally:
        stack.stop()
        fake.stop()


def check_concurrent(stack, fake):
    asyncio.run(run_concurrent(stack, 4, first=10_000))  # warm: imports, first channel, connections
    idle = settle(stack)["process"]
    assert idle["rss_bytes"] > 10_000_000 and idle["open_fds"] > 3 and idle["threads"] >= 1
    assert idle["asyncio_tasks"] >= 1
    started = time.monotonic()
    out = asyncio.run(run_concurrent(stack, N))
    took = time.monotonic() - started
    assert not out.wrong, f"{len(out.wrong)} of {N} wrong, first ones:\n" + "\n".join(out.wrong[:15])
    assert out.ok == N
    seconds = sorted(out.seconds)
    line = (f"{N} concurrent conversations in {took:.1f} s: p50 {seconds[N // 2]:.2f} s, "
            f"p99 {seconds[int(N * 0.99) - 1]:.2f} s")
    print("\n" + line)

    after = settle(stack, timeout=60)
    assert after["requests_in_flight"] == 0
    assert after["temporary_channels"]["count"] == 0, "temporary channels left registered"
    ours = [c for c in fake.created_channels() if c.get("name", "").startswith("cdp-chat-")]
    assert len(ours) >= N
    proc = after["process"]
    # Back to idle: a task or a socket per conversation left behind would show here. Slack: a few
    # tasks (the scheduler's and the listener's come and go) and the REST client's keep-alive pool
    # (httpx keeps up to 20 connections to Discord open).
    assert proc["asyncio_tasks"] <= idle["asyncio_tasks"] + 5, (idle, proc)
    assert proc["open_fds"] <= idle["open_fds"] + 25, (idle, proc)
    print(f"idle: {idle}\nafter: {proc}")
    tables.report(f"Load: {N} concurrent conversations in one cdp serve", "\n".join([
        "| figure | result |", "|---|---|", f"| answers exactly their own | {out.ok} / {N}, 0 wrong |",
        f"| time | {line} |", f"| asyncio tasks idle → after | {idle['asyncio_tasks']} → {proc['asyncio_tasks']} |",
        f"| open fds idle → after | {idle['open_fds']} → {proc['open_fds']} |",
        "| temporary channels left | 0 |"]))

