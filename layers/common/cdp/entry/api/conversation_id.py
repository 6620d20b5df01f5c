"""Which conversation a chat request names (CONVERSATION_MODE=sticky): the `x-conversation-id` header,
else OpenAI's `user` field. Read only in sticky mode; a bad value is OpenAI's 400."""

from __future__ import annotations

from fastapi import Request

from cdp.domain.sticky import CONVERSATION_NAME_MAX
from cdp.entry.openai import errors as oe
from cdp.settings import Settings

HEADER = "x-conversation-id"


def conversation_name(request: Request, body: object, settings: Settings) -> str | None:
    """The client's name for the conversation, or None (recognised by its history, or fresh mode)."""
    if settings.CONVERSATION_MODE != "sticky":
        return None
    header = request.headers.get(HEADER)
    if header is not None:
        value, param = header, HEADER
    else:
        value, param = (body.get("user") if isinstance(body, dict) else None), "user"
        if value is not None and not isinstance(value, str):
            raise oe.invalid_request("Invalid type for 'user': expected a string.", param="user",
                                     code="invalid_type")
    if value is None or not value.strip():
        return None
    if len(value) > CONVERSATION_NAME_MAX:
        raise oe.invalid_request(f"Invalid '{param}': string too long. Expected a string with maximum length "
                                 f"{CONVERSATION_NAME_MAX}, but got a string with length {len(value)} instead.",
                                 param=param, code="string_above_max_length")
    return value.strip()
