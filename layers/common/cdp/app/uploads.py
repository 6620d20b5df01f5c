"""Inline images and files of a chat request (vision, file parts), uploaded into Discord before the prompt.

Flow (called by ConversationService.start):
1. `prepare_uploads(messages, settings)` before anything is posted: decodes and checks every
   ``data:…;base64,`` image and `file` part (ServiceError on bad input), or None when there is none.
2. `uploads.preview(messages)`: placeholder attachment URLs, so the prompt (and its token count)
   can be checked before a channel is created.
3. `await uploads.upload(rest, channel_id, messages)`: the CDP bot posts the files as attachments in
   the conversation channel (multipart payload_json + files[n]); their URLs replace the inline data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cdp.app import errors as se
from cdp.domain.discord import DiscordError, DiscordForbidden, DiscordNotFound, DiscordRateLimited
from cdp.domain.images import (
    InlineMedia,
    MediaError,
    MediaLimits,
    collect_inline_media,
    placeholder_url,
    replace_media,
)
from cdp.ports import DiscordRestPort, UploadFile
from cdp.settings import Settings

log = logging.getLogger("cdp.app.uploads")


def limits_of(settings: Settings) -> MediaLimits:
    return MediaLimits(max_file_bytes=settings.UPLOAD_MAX_FILE_BYTES,
                       max_total_bytes=settings.UPLOAD_MAX_TOTAL_BYTES)


@dataclass(frozen=True)
class Uploads:
    items: tuple[InlineMedia, ...]

    def preview(self, messages: list) -> list:
        """The messages with placeholder URLs as long as real attachment URLs."""
        return replace_media(messages, {(i.message_index, i.part_index): placeholder_url(i) for i in self.items})

    async def upload(self, rest: DiscordRestPort, channel_id: str, messages: list) -> list:
        """Post the files as the CDP bot in `channel_id`; the messages with their attachment URLs.

        Raises ServiceError (nothing of the prompt is posted yet, so these may be retried).
        """
        files = [UploadFile(i.filename, i.data, i.content_type) for i in self.items]
        try:
            message = await rest.send_bot_message(channel_id, files=files)
        except DiscordRateLimited as exc:
            raise se.unavailable("Discord is rate limiting uploads; retry shortly.",
                                 int((exc.retry_after or 5) + 1), code="discord_rate_limited") from None
        except DiscordNotFound:
            raise se.invalid_request(f"Channel {channel_id} does not exist or is not visible.",
                                     param="channelId") from None
        except DiscordForbidden:
            raise se.upstream_error("The CDP bot may not upload files in this channel (it needs the Attach "
                                    "Files permission).", code="upload_forbidden") from None
        except DiscordError as exc:
            if exc.status == 413 or exc.code == 40005:
                raise se.invalid_request("Discord refused the upload as too large for this server; send "
                                         "smaller images or files.", param="messages",
                                         code="file_too_large") from None
            raise se.upstream_error(f"Discord refused the upload ({exc.status}, code {exc.code}).") from None
        attachments = message.get("attachments") or []
        urls = [a.get("url") or a.get("proxy_url") for a in attachments if isinstance(a, dict)]
        if len(urls) != len(self.items) or not all(urls):
            raise se.upstream_error("Discord accepted the upload but returned no attachment URLs.")
        log.info("inline media uploaded", extra={"channel_id": channel_id, "files": len(urls),
                                                 "bytes": sum(len(i.data) for i in self.items)})
        return replace_media(messages, {(i.message_index, i.part_index): u for i, u in zip(self.items, urls, strict=True)})


def prepare_uploads(messages: list, settings: Settings) -> Uploads | None:
    """Decode and check the inline media of the prompt's messages. Raises a ServiceError (400 at the edge)."""
    try:
        items = collect_inline_media(messages, settings.ALL_DIALOG_RECORD_ENABLE, limits_of(settings))
    except MediaError as exc:
        raise se.invalid_request(f"Invalid content part: {exc.message}.", param=exc.param or "messages",
                                 code=exc.code) from None
    return Uploads(tuple(items)) if items else None
