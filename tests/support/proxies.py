"""Real proxies on loopback for the PROXY_URL tests: an HTTP proxy and a SOCKS5 proxy.

Each runs in its own thread with its own event loop, on a free port, and records every connection
it relayed in `relays` (scheme, target host and port as the client asked for them, the first request
line seen in the tunnel). `hosts` maps names to addresses *inside the proxy only*, so a client given
a URL with a name that does not resolve anywhere else can only reach it through the proxy.

* HttpProxy: CONNECT tunnels, and plain forwarding of absolute-form requests (`GET http://h:p/x`,
  what httpx and aiohttp send for http:// URLs; aiohttp sends `GET ws://h:p/x` for a plain ws:// URL,
  wss:// goes through CONNECT), websocket upgrades included. A forwarded request
  that is not an upgrade gets `Connection: close`, so one connection carries one request.
* Socks5Proxy: RFC 1928 CONNECT with IPv4, IPv6 or domain-name targets; no auth, or RFC 1929
  username/password when `auth=(user, password)` is given.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Self
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Relay:
    scheme: str  # "connect" | "forward" | "socks5"
    host: str  # as the client named it (before the proxy's own `hosts` mapping)
    port: int
    first_line: str  # first request line the client sent through (origin-form for forwarded requests)


class _Proxy:
    scheme = ""

    def __init__(self, hosts: dict[str, str] | None = None, auth: tuple[str, str] | None = None) -> None:
        self.hosts = dict(hosts or {})
        self.auth = auth
        self.refused = 0  # bad handshakes / failed auth
        self._relays: list[Relay] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._tasks: set[asyncio.Task] = set()

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> Self:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop

            async def main() -> None:
                self._server = await asyncio.start_server(self._accept, sock=self._sock)
                ready.set()

            loop.run_until_complete(main())
            loop.run_forever()
            for t in asyncio.all_tasks(loop):
                t.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.sleep(0.05))
            loop.close()

        self._thread = threading.Thread(target=run, name=f"{self.scheme}-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return

        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for t in list(self._tasks):
                t.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._sock is not None
        return self._sock.getsockname()[1]

    def url(self, scheme: str | None = None) -> str:
        cred = f"{self.auth[0]}:{self.auth[1]}@" if self.auth else ""
        return f"{scheme or self.scheme}://{cred}127.0.0.1:{self.port}"

    @property
    def relays(self) -> list[Relay]:
        with self._lock:
            return list(self._relays)

    def relays_to(self, port: int) -> list[Relay]:
        return [r for r in self.relays if r.port == port]

    # -- plumbing -----------------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, OSError, ValueError):
            pass
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _open(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(asyncio.open_connection(self.hosts.get(host, host), port), 5)

    async def _relay(
        self,
        scheme: str,
        host: str,
        port: int,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        first: bytes = b"",
    ) -> None:
        """Pipe both ways until either side closes; log the relay with its first request line."""
        creader, cwriter = client
        ureader, uwriter = upstream
        if not first:
            with contextlib.suppress(TimeoutError):
                first = await asyncio.wait_for(creader.read(65536), 10)
        line = first.split(b"\r\n", 1)[0].decode("latin-1") if first else ""
        with self._lock:
            self._relays.append(Relay(scheme, host, port, line))
        if first:
            uwriter.write(first)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        try:
            await asyncio.gather(pump(creader, uwriter), pump(ureader, cwriter))
        finally:
            uwriter.close()


class HttpProxy(_Proxy):
    scheme = "http"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        request_line, *header_lines = head.decode("latin-1").split("\r\n")[:-2]
        method, target, version = request_line.split(" ", 2)
        headers = [tuple(h.split(":", 1)) for h in header_lines if ":" in h]
        if self.auth is not None:
            want = "Basic " + base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            got = next((v.strip() for k, v in headers if k.strip().lower() == "proxy-authorization"), "")
            if got != want:
                self.refused += 1
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                             b"Proxy-Authenticate: Basic\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
                return
        if method.upper() == "CONNECT":
            host, _, port = target.rpartition(":")
            host = host.strip("[]")
            upstream = await self._open(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await self._relay("connect", host, int(port), (reader, writer), upstream)
            return
        url = urlsplit(target)
        if url.scheme not in ("http", "ws") or not url.hostname:  # aiohttp: `GET ws://h/x` for ws://
            self.refused += 1
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return
        host, port = url.hostname, url.port or 80
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        upgrade = any(k.strip().lower() == "upgrade" for k, _ in headers)
        hop = {"proxy-authorization", "proxy-connection", "keep-alive"} | (set() if upgrade else {"connection"})
        kept = [f"{k}:{v}" for k, v in headers if k.strip().lower() not in hop]
        if not upgrade:
            kept.append("Connection: close")
        first = "\r\n".join([f"{method} {path} {version}", *kept, "", ""]).encode("latin-1")
        upstream = await self._open(host, port)
        await self._relay("forward", host, port, (reader, writer), upstream, first)


class Socks5Proxy(_Proxy):
    scheme = "socks5"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ver, n = await reader.readexactly(2)
        methods = await reader.readexactly(n)
        if ver != 5:
            self.refused += 1
            return
        want = 2 if self.auth is not None else 0
        if want not in methods:
            self.refused += 1
            writer.write(b"\x05\xff")
            await writer.drain()
            return
        writer.write(bytes([5, want]))
        if want == 2:
            _, ulen = await reader.readexactly(2)
            user = (await reader.readexactly(ulen)).decode()
            (plen,) = await reader.readexactly(1)
            password = (await reader.readexactly(plen)).decode()
            ok = (user, password) == self.auth
            writer.write(b"\x01\x00" if ok else b"\x01\x01")
            await writer.drain()
            if not ok:
                self.refused += 1
                return
        ver, cmd, _, atyp = await reader.readexactly(4)
        if atyp == 1:
            host = str(ipaddress.IPv4Address(await reader.readexactly(4)))
        elif atyp == 4:
            host = str(ipaddress.IPv6Address(await reader.readexactly(16)))
        elif atyp == 3:
            (length,) = await reader.readexactly(1)
            host = (await reader.readexactly(length)).decode("idna")
        else:
            host = ""
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        if cmd != 1 or not host:
            self.refused += 1
            writer.write(b"\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00")  # command not supported
            await writer.drain()
            return
        try:
            upstream = await self._open(host, port)
        except (OSError, TimeoutError):
            writer.write(b"\x05\x05\x00\x01\x00\x00\x00\x00\x00\x00")  # connection refused
            await writer.drain()
            return
        writer.write(b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00")
        await writer.drain()
        await self._relay("socks5", host, port, (reader, writer), upstream)
