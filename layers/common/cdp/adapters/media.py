"""Images and files on the wire: uploads into Discord (vision / files in chat) and downloads of the
pictures Coze draws (to re-host them). Rules live in cdp.domain.images.

Chat flow (called by ConversationService.start):
1. `prepare_uploads(messages, settings)` before anything is posted: decodes and checks every
   ``data:…;base64,`` image and `file` part (400 on bad input), or returns None when there is none.
2. `uploads.preview(messages)`: placeholder attachment URLs, so the prompt (and its token count)
   can be checked before a channel is created.
3. `await uploads.upload(rest, channel_id, messages)`: the CDP bot posts the files as attachments in
   the conversation channel (multipart payload_json + files[n]); their URLs replace the inline data.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from cdp.adapters.discord.rest import UploadFile
from cdp.domain.discord import DiscordError, DiscordForbidden, DiscordNotFound, DiscordRateLimited
from cdp.domain.images import (
    InlineMedia,
    MediaError,
    MediaLimits,
    collect_inline_media,
    placeholder_url,
    replace_media,
    sniff_image,
)
from cdp.entry.openai import errors as oe
from cdp.settings import Settings

log = logging.getLogger("cdp.adapters.media")

DOWNLOAD_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


def limits_of(settings: Settings) -> MediaLimits:
    return MediaLimits(max_file_bytes=settings.UPLOAD_MAX_FILE_BYTES,
                       max_total_bytes=settings.UPLOAD_MAX_TOTAL_BYTES)


@dataclass(frozen=True)
class Uploads:
    items: tuple[InlineMedia, ...]

    def preview(self, messages: list) -> list:
        """The messages with placeholder URLs as long as real attachment URLs."""
        return replace_media(messages, {(i.message_index, i.part_index): placeholder_url(i) for i in self.items})

    async def upload(self, rest, channel_id: str, messages: list) -> list:
        """Post the files as the CDP bot in `channel_id`; the messages with their attachment URLs.

        Raises OpenAIError (nothing of the prompt is posted yet, so these may be retried).
        """
        files = [UploadFile(i.filename, i.data, i.content_type) for i in self.items]
        try:
            message = await rest.send_bot_message(channel_id, files=files)
        except DiscordRateLimited as exc:
            raise oe.unavailable("Discord is rate limiting uploads; retry shortly.",
                                 int((exc.retry_after or 5) + 1), code="discord_rate_limited") from None
        except DiscordNotFound:
            raise oe.invalid_request(f"Channel {channel_id} does not exist or is not visible.",
                                     param="channelId") from None
        except DiscordForbidden:
            raise oe.upstream_error("The CDP bot may not upload files in this channel (it needs the Attach "
                                    "Files permission).", code="upload_forbidden") from None
        except DiscordError as exc:
            if exc.status == 413 or exc.code == 40005:
                raise oe.invalid_request("Discord refused the upload as too large for this server; send "
                                         "smaller images or files.", param="messages",
                                         code="file_too_large") from None
            raise oe.upstream_error(f"Discord refused the upload ({exc.status}, code {exc.code}).") from None
        attachments = message.get("attachments") or []
        urls = [a.get("url") or a.get("proxy_url") for a in attachments if isinstance(a, dict)]
        if len(urls) != len(self.items) or not all(urls):
            raise oe.upstream_error("Discord accepted the upload but returned no attachment URLs.")
        log.info("inline media uploaded", extra={"channel_id": channel_id, "files": len(urls),
                                                 "bytes": sum(len(i.data) for i in self.items)})
        return replace_media(messages, {(i.message_index, i.part_index): u for i, u in zip(self.items, urls, strict=True)})


def prepare_uploads(messages: list, settings: Settings) -> Uploads | None:
    """Decode and check the inline media of the prompt's messages. Raises a 400 OpenAIError."""
    try:
        items = collect_inline_media(messages, settings.ALL_DIALOG_RECORD_ENABLE, limits_of(settings))
    except MediaError as exc:
        raise oe.invalid_request(f"Invalid content part: {exc.message}.", param=exc.param or "messages",
                                 code=exc.code) from None
    return Uploads(tuple(items)) if items else None


# ------------------------------------------------------------------------------------------------
# downloads (re-hosting the images of a Coze reply)


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
