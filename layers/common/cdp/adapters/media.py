"""Downloads of the pictures Coze draws (to re-host them): an httpx client that refuses
non-public addresses, and a size- and type-checked fetch. Rules live in cdp.domain.images."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from urllib.parse import urlsplit

import httpx

from cdp.domain.images import sniff_image
from cdp.settings import Settings

log = logging.getLogger("cdp.adapters.media")

DOWNLOAD_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


class ImageFetchError(Exception):
    """An image URL from a reply could not be fetched as an image (message safe to log and show)."""


def http_client(settings: Settings) -> httpx.AsyncClient:
    hooks = {}
    if not settings.PROXY_URL:  # through a proxy, the proxy resolves names and decides
        trusted = {urlsplit(settings.DISCORD_API_BASE).hostname or ""}
        hooks = {"request": [_refuse_private_addresses(trusted)]}
    return httpx.AsyncClient(timeout=DOWNLOAD_TIMEOUT, follow_redirects=True, max_redirects=3,
                             proxy=settings.PROXY_URL or None, event_hooks=hooks,
                             headers={"User-Agent": settings.USER_AGENT})


def _refuse_private_addresses(trusted_hosts: set[str]):
    """An httpx request hook (so redirects are checked too): image URLs come from Coze's reply text,
    so they must not make this server fetch from its own network (loopback, private, link-local,
    metadata addresses). The Discord API host is trusted (a mirror or the test fake may be local)."""

    async def guard(request: httpx.Request) -> None:
        host = request.url.host
        if host in trusted_hosts:
            return
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, request.url.port or 443)
        except OSError:
            return  # unresolvable: the request itself fails with a clear error
        for info in infos:
            address = ipaddress.ip_address(info[4][0].split("%")[0])
            if not address.is_global or address.is_multicast:
                raise ImageFetchError(f"refusing to download from a non-public address ({host})")

    return guard


async def fetch_image(client: httpx.AsyncClient, url: str, max_bytes: int) -> tuple[bytes, str]:
    """GET `url`; (bytes, sniffed MIME). Refuses non-images, bodies over `max_bytes`, HTTP errors."""
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
                if len(body) > max_bytes:
                    raise ImageFetchError(f"too large (over {max_bytes} bytes)")
    except httpx.HTTPError as exc:
        raise ImageFetchError(f"download failed ({type(exc).__name__})") from None
    found = sniff_image(bytes(body[:16]))
    if found is None:
        raise ImageFetchError("the body is not a PNG, JPEG, GIF or WebP image")
    return bytes(body), found.mime
