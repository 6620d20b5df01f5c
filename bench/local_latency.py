"""Local benchmark: what the proxy itself adds, and its memory, against the fake Discord.

The simulated Coze bot answers at once (no first-token delay, 1 edit interval of 10 ms), so the
measured time is the proxy's own work: create channel, post as user, gateway → store → response.
Prints p50/p95 latency for sequential non-stream and stream requests, throughput with 20 at once,
and the server process's RSS. Run: .venv/bin/python bench/local_latency.py
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import openai  # noqa: E402
from cdp.sim import FakeDiscord, SimConfig  # noqa: E402

from tests.support.proc import CdpProcess, free_port, settings_env  # noqa: E402

N_SEQUENTIAL = 30
N_CONCURRENT = 20
ROUNDS_CONCURRENT = 3


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def main() -> None:
    cfg = SimConfig(heartbeat_interval_ms=5000, coze_edit_interval=0.01, coze_first_token_delay=0.0,
                    coze_edits=1, rate_limits={}, default_rate_limit=(10_000, 1.0), global_rate_limit=10_000)
    with FakeDiscord(cfg) as fake:
        port = free_port()
        env = settings_env(fake, PORT=str(port), HOST="127.0.0.1", LOG_LEVEL="WARNING", CHANNEL_AUTO_DEL_TIME="1",
                           REQUEST_RATE_LIMIT="0",  # measure the proxy, not the per-IP limit
                           ACCOUNT_MAX_CONCURRENT="1000", QUEUE_MAX_SIZE="100000")  # nor the account queue
        proc = CdpProcess(["serve"], env, port).start()
        try:
            proc.wait_healthy()
            rss_idle = rss_mb(proc.proc.pid)
            client = openai.AsyncOpenAI(base_url=proc.url + "/v1", api_key="sk-test-key-1", max_retries=0)
            msgs = [{"role": "user", "content": "benchmark"}]
            await client.chat.completions.create(model="gpt-4o", messages=msgs)  # warm-up
            non_stream, stream_first, stream_total = [], [], []
            for _ in range(N_SEQUENTIAL):
                t = time.perf_counter()
                await client.chat.completions.create(model="gpt-4o", messages=msgs)
                non_stream.append(time.perf_counter() - t)
                t = time.perf_counter()
                s = await client.chat.completions.create(model="gpt-4o", messages=msgs, stream=True)
                first = None
                async for c in s:
                    if first is None and c.choices and c.choices[0].delta.content:
                        first = time.perf_counter() - t
                stream_total.append(time.perf_counter() - t)
                stream_first.append(first or float("nan"))
            t = time.perf_counter()
            for _ in range(ROUNDS_CONCURRENT):
                await asyncio.gather(*(client.chat.completions.create(model="gpt-4o", messages=msgs)
                                       for _ in range(N_CONCURRENT)))
            wall = time.perf_counter() - t
            rss_load = rss_mb(proc.proc.pid)
        finally:
            proc.stop()
    ms = lambda v: f"{v * 1000:.0f} ms"  # noqa: E731
    print(f"non-stream latency   p50 {ms(statistics.median(non_stream))}  p95 {ms(pct(non_stream, .95))}  (n={N_SEQUENTIAL})")
    print(f"stream first content p50 {ms(statistics.median(stream_first))}  p95 {ms(pct(stream_first, .95))}")
    print(f"stream total         p50 {ms(statistics.median(stream_total))}  p95 {ms(pct(stream_total, .95))}")
    print(f"throughput           {ROUNDS_CONCURRENT * N_CONCURRENT / wall:.1f} requests/s with {N_CONCURRENT} at once")
    print(f"server RSS           {rss_idle:.0f} MB idle, {rss_load:.0f} MB after the load")


if __name__ == "__main__":
    asyncio.run(main())
