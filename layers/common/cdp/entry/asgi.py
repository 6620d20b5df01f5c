"""Raw ASGI answers, for the places that answer below FastAPI (a middleware catching a cancellation,
the lazy stream app before the app exists)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any


async def send_json(send: Callable[[dict], Awaitable[None]], status: int, body: Any,
                    headers: dict[str, str] | None = None) -> None:
    """A whole JSON response: start (content-type, content-length, `headers` lower-cased) and body."""
    raw = json.dumps(body).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    hdrs += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": raw})
