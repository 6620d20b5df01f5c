"""Soak: many conversations through one `cdp serve`, its memory, descriptors and tasks sampled.

    python bench/soak.py [--requests 20000] [--concurrency 50] [--every 1000] [--warmup 4000]

The stack of tests/load/driver.py (fake Discord without rate limits, a fast Coze, memory store, a
temporary channel per conversation deleted a second after use), `--concurrency` conversations at a
time, half streamed, each checked to be exactly its own scripted reply. Every `--every` requests the
server's RSS, open file descriptors, asyncio tasks and threads are read from /api/status (`process`;
RSS also from /proc/PID/status) and a row is printed. Targets (exit 1 if missed): every answer right;
after the warm-up (`--warmup` requests) RSS grows at most 10 %, descriptors and tasks return to
their warm level (a small slack: the REST keep-alive pool, tasks that come and go).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "layers" / "common"), str(ROOT)]

from tests.load.driver import Outcome, client_for, converse, load_fake, load_stack, settle  # noqa: E402

RSS_GROWTH_MAX = 0.10
FD_SLACK, TASK_SLACK = 25, 5


def proc_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def soak(stack, total: int, concurrency: int, every: int) -> tuple[Outcome, list[dict]]:
    out, samples = Outcome(), []
    counter = iter(range(total))
    pid = stack.api.proc.pid
    started = time.monotonic()
    next_sample = every
    async with client_for(stack, concurrency + 2) as client:

        async def sample(done: int) -> None:
            r = await client.get("/api/status")
            p = r.json()["process"]
            row = {"requests": done, "seconds": time.monotonic() - started, "rss": proc_rss(pid),
                   "status_rss": p["rss_bytes"], "fds": p["open_fds"], "tasks": p["asyncio_tasks"],
                   "threads": p["threads"], "wrong": len(out.wrong)}
            samples.append(row)
            print(f"{row['requests']:>9} {row['seconds']:>8.0f} {done / row['seconds']:>7.0f} "
                  f"{row['rss'] / 2**20:>8.1f} {row['fds']:>5} {row['tasks']:>6} {row['threads']:>8} "
                  f"{row['wrong']:>6}", flush=True)

        async def worker() -> None:
            nonlocal next_sample
            for i in counter:
                await converse(client, i, out)
                done = out.ok + len(out.wrong)
                if done >= next_sample:
                    next_sample += every
                    await sample(done)

        print(f"{'requests':>9} {'seconds':>8} {'req/s':>7} {'RSS MB':>8} {'fds':>5} {'tasks':>6} "
              f"{'threads':>8} {'wrong':>6}", flush=True)
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out, samples


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--every", type=int, default=1000, help="requests between samples")
    ap.add_argument("--warmup", type=int, default=4000, help="requests before the reference sample")
    args = ap.parse_args()

    fake = load_fake()
    stack = load_stack(fake)
    try:
        out, samples = asyncio.run(soak(stack, args.requests, args.concurrency, args.every))
        idle = settle(stack, timeout=60)
        end = idle["process"]
    finally:
        stack.stop()
        fake.stop()
    warm = next((s for s in samples if s["requests"] >= args.warmup), samples[0])
    after = [s for s in samples if s["requests"] >= warm["requests"]]
    peak = max(s["rss"] for s in after)
    growth = (peak - warm["rss"]) / warm["rss"]
    print(f"\nsettled: RSS {proc_rss_of(end) / 2**20:.1f} MB (status), fds {end['open_fds']}, "
          f"tasks {end['asyncio_tasks']}, threads {end['threads']}, temporary channels "
          f"{idle['temporary_channels']['count']}")
    checks = [
        ("answers right (no cross-talk, none lost)", f"{out.ok} / {args.requests}", out.ok == args.requests),
        (f"RSS growth after {warm['requests']} requests", f"{growth:+.1%} ({warm['rss'] / 2**20:.1f} → "
                                                           f"peak {peak / 2**20:.1f} MB)", growth <= RSS_GROWTH_MAX),
        ("file descriptors, warm → settled", f"{warm['fds']} → {end['open_fds']}",
         end["open_fds"] <= warm["fds"] + FD_SLACK),
        ("asyncio tasks, warm → settled", f"{warm['tasks']} → {end['asyncio_tasks']}",
         end["asyncio_tasks"] <= warm["tasks"] + TASK_SLACK),
        ("temporary channels left", str(idle["temporary_channels"]["count"]),
         idle["temporary_channels"]["count"] == 0),
    ]
    half = next((s for s in samples if s["requests"] >= samples[-1]["requests"] // 2), warm)
    late = (max(s["rss"] for s in samples if s["requests"] >= half["requests"]) - half["rss"]) / half["rss"]
    checks.append((f"RSS growth over the second half (from {half['requests']} requests; informative)",
                   f"{late:+.1%}", True))
    print("\n| figure | measured | target met |\n|---|---|---|")
    for name, value, ok in checks:
        print(f"| {name} | {value} | {'yes' if ok else 'NO'} |")
    for line in out.wrong[:10]:
        print("wrong:", line)
    return 0 if all(ok for _, _, ok in checks) else 1


def proc_rss_of(process: dict) -> int:
    return process.get("rss_bytes") or 0


if __name__ == "__main__":
    sys.exit(main())
