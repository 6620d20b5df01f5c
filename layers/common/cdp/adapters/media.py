"""Downloads of the pictures Coze draws (to re-host them): an httpx client that refuses
non-public addresses, and a size- and type-checked fetch. Rules live in cdp.domain.images."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from urllib.parse import urlsplit

import httpcore
import httpx

from cdp.domain.images import sniff_image
from cdp.settings import Settings

log = logging.getLogger("cdp.adapters.media")

DOWNLOAD_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
# The well-known NAT64 prefix (RFC 6052): `ipaddress` counts it global, but through a NAT64 gateway
# 64:ff9b::a9fe:a9fe is 169.254.169.254. Its local-use sibling 64:ff9b:1::/48 is already not global.
NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")


class ImageFetchError(Exception):
    """An image URL from a reply could not be fetched as an image (message safe to log and show)."""


def is_public_address(text: str) -> bool:
    """True only for a unicast address on the public internet, by the `ipaddress` module's own
    properties. Refused besides every non-global range (loopback, private, link-local, shared,
    reserved, documentation, multicast...): IPv6 forms that carry an IPv4 address the operating system
    or a gateway may route inwards (IPv4-mapped ::ffff:0:0/96, IPv4-compatible ::/96, 6to4, Teredo,
    NAT64 64:ff9b::/96)."""
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if (ip.ipv4_mapped is not None or ip.sixtofour is not None or ip.teredo is not None
                or ip in NAT64_WELL_KNOWN or int(ip) >> 32 == 0 or ip.is_site_local):
            return False
    return ip.is_global and not (ip.is_multicast or ip.is_private or ip.is_reserved or ip.is_loopback
                                 or ip.is_link_local or ip.is_unspecified)


async def resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (an IP literal: itself)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def public_addresses(host: str, port: int) -> list[str]:
    """`host`'s addresses, all public, or ImageFetchError: when it does not resolve, or when any of its
    addresses is not public (one bad answer among good ones is an attempt, not an accident)."""
    try:
        addresses = await resolve(host, port)
    except (OSError, UnicodeError):
        addresses = []
    if not addresses:
        raise ImageFetchError(f"refusing to download from {host}: the name does not resolve")
    if not all(map(is_public_address, addresses)):
        raise ImageFetchError(f"refusing to download from a non-public address ({host})")
    return addresses


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend that resolves a host once, checks every address, and connects to
    one of those very addresses: no second lookup between the check and the connection (DNS
    rebinding). TLS still gets the URL's host name for SNI and certificate checks (httpcore passes
    the origin's host to start_tls), and the Host header is the request's. `trusted` hosts (the
    Discord API host: a local mirror or the test fake) are connected to as they are."""

    def __init__(self, trusted: set[str]) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._trusted = trusted

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None, socket_options=None) -> httpcore.AsyncNetworkStream:
        kw = {"timeout": timeout, "local_address": local_address, "socket_options": socket_options}
        if host in self._trusted:
            return await self._inner.connect_tcp(host, port, **kw)
        error: Exception | None = None
        for address in await public_addresses(host, port):
            try:
                return await self._inner.connect_tcp(address, port, **kw)
            except httpcore.ConnectError as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options=None) -> httpcore.AsyncNetworkStream:
        raise ImageFetchError("refusing to download over a unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _pinned_transport(trusted: set[str]) -> httpx.AsyncHTTPTransport:
    transport = httpx.AsyncHTTPTransport()
    # httpx has no public way to give its pool a network backend; the pool it builds without a proxy
    # is exactly this one (tests/unit/test_media.py proves the pinning on the wire).
    transport._pool = httpcore.AsyncConnectionPool(ssl_context=httpx.create_ssl_context(),
                                                   network_backend=PinnedBackend(trusted))
    return transport


def http_client(settings: Settings) -> httpx.AsyncClient:
    """The client for images in Coze's replies (URLs an outsider may choose): only public addresses.

    Directly: every connection (redirects included) goes to an address that was resolved and checked
    once (PinnedBackend). Through PROXY_URL: the proxy connects, so a request hook checks what the
    proxy will be asked to reach (the URL host's addresses) before each request is handed to it."""
    trusted = {urlsplit(settings.DISCORD_API_BASE).hostname or ""}
    common = {"timeout": DOWNLOAD_TIMEOUT, "follow_redirects": True, "max_redirects": 3,
              "headers": {"User-Agent": settings.USER_AGENT}}
    if settings.PROXY_URL:
        return httpx.AsyncClient(proxy=settings.PROXY_URL, event_hooks={"request": [_check_before_proxy(trusted)]},
                                 **common)
    return httpx.AsyncClient(transport=_pinned_transport(trusted), **common)


def _check_before_proxy(trusted_hosts: set[str]):
    """An httpx request hook (so redirects are checked too): the URL's host must resolve, here, to
    public addresses only, before the request goes to the proxy."""

    async def guard(request: httpx.Request) -> None:
        host = request.url.host
        if host in trusted_hosts:
            return
        await public_addresses(host, request.url.port or (443 if request.url.scheme == "https" else 80))

    return guard


class DownloadBudget:
    """What one request may download in all (every image of every conversation of it): `total_bytes`,
    within `seconds` from the first download. Shared by concurrent downloads."""

    def __init__(self, total_bytes: int, seconds: float) -> None:
        self.left = total_bytes
        self.total_bytes = total_bytes
        self.seconds = seconds
        self.deadline: float | None = None

    def start(self) -> float:
        """The deadline (event-loop time), set by the first call."""
        if self.deadline is None:
            self.deadline = asyncio.get_running_loop().time() + self.seconds
        return self.deadline

    def take(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise ImageFetchError(f"over the request's download budget of {self.total_bytes} bytes")


async def fetch_image(client: httpx.AsyncClient, url: str, max_bytes: int,
                      budget: DownloadBudget | None = None) -> tuple[bytes, str]:
    """GET `url`; (bytes, sniffed MIME). Refuses non-images, bodies over `max_bytes` or over what is
    left of `budget` (bytes are taken from it as they arrive), HTTP errors."""
    if not url.lower().startswith(("http://", "https://")):
        raise ImageFetchError("not an http(s) URL")
    try:
        async with client.stream("GET", url) as resp:
            if resp.status_code != 200:
                raise ImageFetchError(f"HTTP {resp.status_code}")
            ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype and not (ctype.startswith("image/") or ctype in ("application/octet-stream",
                                                                      "binary/octet-stream")):
                raise ImageFetchError(f"not an image (content-type {ctype})")
            length = resp.headers.get("content-length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise ImageFetchError(f"too large ({length} bytes, limit {max_bytes})")
            body = bytearray()
            async for chunk in resp.aiter_bytes():
                body += chunk
                if budget is not None:
                    budget.take(len(chunk))
                if len(body) > max_bytes:
                    raise ImageFetchError(f"too large (over {max_bytes} bytes)")
    except httpx.HTTPError as exc:
        raise ImageFetchError(f"download failed ({type(exc).__name__})") from None
    found = sniff_image(bytes(body[:16]))
    if found is None:
        raise ImageFetchError("the body is not a PNG, JPEG, GIF or WebP image")
    return bytes(body), found.mime
