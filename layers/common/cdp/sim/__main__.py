"""python -m cdp.sim --port N [--heartbeat-ms MS] [--edit-interval S] [--first-token-delay S]"""

from __future__ import annotations

import argparse
import asyncio
import json

from .config import SimConfig
from .server import serve


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m cdp.sim", description="Fake Discord (REST + Gateway) with a simulated Coze bot")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--heartbeat-ms", type=int, default=41250)
    p.add_argument("--edit-interval", type=float, default=0.6)
    p.add_argument("--first-token-delay", type=float, default=0.5)
    p.add_argument("--max-channels", type=int, default=500)
    p.add_argument("--no-message-content", action="store_true", help="application lacks the MESSAGE_CONTENT flag (IDENTIFY gets 4014)")
    a = p.parse_args(argv)
    cfg = SimConfig(
        host=a.host,
        port=a.port,
        heartbeat_interval_ms=a.heartbeat_ms,
        coze_edit_interval=a.edit_interval,
        coze_first_token_delay=a.first_token_delay,
        max_channels=a.max_channels,
    )
    if a.no_message_content:
        cfg.app_flags = 0

    def ready(sim) -> None:  # noqa: ANN001
        info = sim.info()
        print(f"fake discord listening: {info['base_url']}", flush=True)
        print(json.dumps(info, indent=2), flush=True)

    try:
        asyncio.run(serve(cfg, on_ready=ready))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
