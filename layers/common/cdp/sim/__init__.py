"""Fake Discord (REST v10/v9 + Gateway) with a simulated Coze bot, for tests and demo mode.

    with FakeDiscord(SimConfig(heartbeat_interval_ms=1000)) as fd:
        fd.base_url  # http://127.0.0.1:PORT/api/v10
"""

from .config import GATEWAY_MESSAGE_CONTENT, GATEWAY_MESSAGE_CONTENT_LIMITED, SimConfig
from .core import Sim
from .coze import BOT_LIMIT_ERRORS, OTHER_ERRORS, USER_LIMIT_ERRORS, final_parts, final_text, parse_directive
from .server import FakeDiscord, build_app, serve

__all__ = [
    "BOT_LIMIT_ERRORS",
    "FakeDiscord",
    "GATEWAY_MESSAGE_CONTENT",
    "GATEWAY_MESSAGE_CONTENT_LIMITED",
    "OTHER_ERRORS",
    "Sim",
    "SimConfig",
    "USER_LIMIT_ERRORS",
    "build_app",
    "final_parts",
    "final_text",
    "parse_directive",
    "serve",
]
