"""`cdp <args>` (as `python -m cdp.entry.cli`) that also writes the DynamoDB adapter's request
counters (cdp.adapters.store.dynamodb STATS, per process) to $BENCH_STATS_FILE every 0.1 s, so
bench/stream_bench.py can count the reads and writes of `cdp serve --no-listener` and `cdp listener`.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from cdp.adapters.store.dynamodb import STATS
from cdp.entry.cli import main


def dump(path: str) -> None:
    while True:
        with open(path + ".tmp", "w") as fh:
            json.dump(STATS.snapshot(), fh)
        os.replace(path + ".tmp", path)
        time.sleep(0.1)


if __name__ == "__main__":
    threading.Thread(target=dump, args=(os.environ["BENCH_STATS_FILE"],), daemon=True, name="bench-stats").start()
    sys.exit(main())
