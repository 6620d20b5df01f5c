"""A fault-injecting HTTP proxy in front of a moto server: DynamoDB failing as an operator's bad day.

Point one process at it (AWS_ENDPOINT_URL_DYNAMODB=proxy.url) and the others at moto directly, so
only that process sees the store fail. Every request is relayed to moto unless a rule matches it:
`fail(op, contains)` answers each DynamoDB call whose X-Amz-Target ends with `op` ("Query",
"UpdateItem"...) and whose body contains `contains` with a 500 InternalServerError (what DynamoDB
sends), until `clear()`. `failed` counts the calls answered so.
"""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import urlsplit


class DynamoFaultProxy:
    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)
        self.host, self.port_up = target.hostname or "127.0.0.1", target.port or 80
        self._rules: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self.failed = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                op = (self.headers.get("X-Amz-Target") or "").rsplit(".", 1)[-1]
                if proxy._matches(op, body):
                    out = json.dumps({"__type": "com.amazonaws.dynamodb.v20120810#InternalServerError",
                                      "message": "injected fault"}).encode()
                    self.send_response(500)
                    self.send_header("Content-Type", "application/x-amz-json-1.0")
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                    return
                conn = http.client.HTTPConnection(proxy.host, proxy.port_up, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                    conn.request("POST", self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response(resp.status)
                    for k, v in resp.getheaders():
                        if k.lower() not in ("content-length", "connection", "transfer-encoding", "server", "date"):
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_POST

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _matches(self, op: str, body: bytes) -> bool:
        with self._lock:
            hit = any(op.endswith(o) and c.encode() in body for o, c in self._rules)
            if hit:
                self.failed += 1
            return hit

    def fail(self, op: str, contains: str = "") -> None:
        with self._lock:
            self._rules.append((op, contains))

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
