"""Every benchmark in bench/, one after another, each in its own interpreter (`make bench`).

    python bench/run.py [--runs 3] [--quick] [name ...]
        names: cold_import interactions_import layer_size local_latency stream_bench

Each benchmark prints its own numbers; a summary follows. Exit status 1 if one missed its target or
failed (each benchmark's docstring says what it checks). --runs goes to the cold-start benchmarks
(their own default, 5, is steadier; 3 keeps this quick). --quick goes to stream_bench (N = 1, 20 only).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
BENCHMARKS = {"cold_import": ["--runs"], "interactions_import": ["--runs"], "layer_size": [], "local_latency": [],
              "stream_bench": ["--quick"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="runs per cold-start measurement")
    ap.add_argument("--quick", action="store_true", help="stream_bench with N = 1, 20 only")
    ap.add_argument("names", nargs="*", help=f"some of {', '.join(BENCHMARKS)} (default: all)")
    args = ap.parse_args()
    if unknown := sorted(set(args.names) - set(BENCHMARKS)):
        ap.error(f"unknown benchmark: {', '.join(unknown)}")
    results: list[tuple[str, int, float]] = []
    for name in args.names or BENCHMARKS:
        extra = [f for flag in BENCHMARKS[name] if flag == "--runs" for f in (flag, str(args.runs))]
        extra += ["--quick"] if "--quick" in BENCHMARKS[name] and args.quick else []
        print(f"== {name}", flush=True)
        started = time.monotonic()
        code = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), *extra], cwd=BENCH.parent).returncode
        results.append((name, code, time.monotonic() - started))
        print(flush=True)
    print("== summary")
    for name, code, seconds in results:
        print(f"{name:<22}{'ok' if code == 0 else f'target missed or failed (exit {code})':<40}{seconds:>6.1f} s")
    return 0 if all(code == 0 for _, code, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
