"""A fake Telegram Bot API on loopback: records sendMessage calls (real HTTP, own thread).

Point cdp at it with TELEGRAM_API_BASE=<fake.url>. `fail_with(status)` makes it refuse,
`delay(seconds)` makes it slow (alert time-outs).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeTelegram:
    def __init__(self) -> None:
        self.messages: list[dict] = []  # {"token": ..., "chat_id": ..., "text": ...}
        self.status = 200
        self.delay_seconds = 0.0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                if fake.delay_seconds:
                    time.sleep(fake.delay_seconds)
                parts = self.path.strip("/").split("/")
                ok = len(parts) == 2 and parts[0].startswith("bot") and parts[1] == "sendMessage"
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                if ok and fake.status == 200:
                    with fake._lock:
                        fake.messages.append({"token": parts[0][3:], **body})
                    out = {"ok": True, "result": {"message_id": len(fake.messages)}}
                    status = 200
                else:
                    status = fake.status if ok else 404
                    out = {"ok": False, "error_code": status, "description": "fake refusal"}
                data = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeTelegram:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeTelegram:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def texts(self) -> list[str]:
        with self._lock:
            return [m.get("text", "") for m in self.messages]

    def wait_for(self, needle: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t in self.texts():
                if needle in t:
                    return t
            time.sleep(0.05)
        raise AssertionError(f"no Telegram alert containing {needle!r}; got {self.texts()!r}")
