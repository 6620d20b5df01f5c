"""ECS entry point of the listener: `cdp listener` with the health port from CDP_HEALTH_PORT.

Exit codes: 0 after SIGTERM (graceful: in-flight store writes finished), 2 bad settings, 3 the
gateway refused us for good (bad BOT_TOKEN, intents not enabled). For 2 and 3 a restart cannot
help: the process waits CDP_FAILED_EXIT_DELAY seconds (default 60) before exiting so ECS restarts
it at most about once a minute until the secret / Developer Portal setting is fixed.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from cdp.entry import logs
from cdp.entry.listener import EXIT_FAILED, run_listener
from cdp.settings import LISTENER_REQUIRED, SettingsError, load_settings


def _slow_exit(rc: int) -> int:
    time.sleep(float(os.environ.get("CDP_FAILED_EXIT_DELAY", "60")))
    return rc


def main() -> int:
    try:
        settings = load_settings(required=LISTENER_REQUIRED)  # the task is given BOT_TOKEN only
    except SettingsError as exc:
        print(f"cdp listener: refusing to start, {exc}", file=sys.stderr, flush=True)
        return _slow_exit(2)
    logs.configure(settings.LOG_LEVEL, settings.secrets())
    rc = asyncio.run(run_listener(settings, int(os.environ.get("CDP_HEALTH_PORT", "8081"))))
    return _slow_exit(rc) if rc == EXIT_FAILED else rc


if __name__ == "__main__":
    sys.exit(main())
