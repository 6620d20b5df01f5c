"""Discord REST errors, mapped from status codes and Discord's JSON error codes.

Messages never contain a token: callers pass fingerprints (cdp.domain.secrets).
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from cdp.domain.secrets import redact

VERIFY_ACCOUNT_TEXT = "You need to verify your account"
# User accounts post with a browser's User-Agent (the official client is a browser); USER_AGENT overrides.
DEFAULT_USER_AGENT = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
_SNOWFLAKE = re.compile(r"\d{15,21}")

# Discord JSON error codes we act on.
CODE_MAX_CHANNELS = 30013
CODE_INVALID_FORM = 50035


# Permission bits (https://discord.com/developers/docs/topics/permissions)
PERM_ADMINISTRATOR = 1 << 3
PERM_MANAGE_CHANNELS = 1 << 4
PERM_VIEW_CHANNEL = 1 << 10
PERM_SEND_MESSAGES = 1 << 11
PERM_READ_MESSAGE_HISTORY = 1 << 16
PERM_MANAGE_ROLES = 1 << 28
# What a member of a private conversation channel is allowed (see private_overwrites).
PRIVATE_MEMBER_ALLOW = PERM_VIEW_CHANNEL | PERM_SEND_MESSAGES | PERM_READ_MESSAGE_HISTORY
OVERWRITE_ROLE = 0
OVERWRITE_MEMBER = 1

# Channel types a prompt may be posted in / the original's routes may act on: text, announcement and
# the three thread types. Categories (4), voice (2), forums (15) and DMs (1, 3) are not.
TEXT_CHANNEL_TYPES = frozenset({0, 5})
THREAD_TYPES = frozenset({10, 11, 12})
MESSAGE_CHANNEL_TYPES = TEXT_CHANNEL_TYPES | THREAD_TYPES
CATEGORY_TYPES = frozenset({4})


def member_overwrite(user_id: str, allow: int = PRIVATE_MEMBER_ALLOW) -> dict:
    """A permission overwrite allowing `allow` to one member (Discord's overwrite object)."""
    return {"id": str(user_id), "type": OVERWRITE_MEMBER, "allow": str(allow), "deny": "0"}


def private_overwrites(guild_id: str, member_ids: list[str]) -> list[dict]:
    """permission_overwrites of a private channel: @everyone (the role whose id is the guild id) may not
    see it; each of `member_ids` may see it, post and read its history. Duplicates are dropped."""
    out = [{"id": str(guild_id), "type": OVERWRITE_ROLE, "allow": "0", "deny": str(PERM_VIEW_CHANNEL)}]
    seen: set[str] = set()
    for uid in member_ids:
        if uid and str(uid) not in seen:
            seen.add(str(uid))
            out.append(member_overwrite(str(uid)))
    return out


def is_snowflake(value: object) -> bool:
    """A Discord id: 15 to 21 digits (guilds, channels, users, messages)."""
    return isinstance(value, str) and _SNOWFLAKE.fullmatch(value) is not None  # not `$`: it accepts a trailing \n


def new_nonce() -> str:
    """A Discord message nonce: a numeric string (at most 25 chars), unique enough per message.

    Sent with enforce_nonce, so a retried send (timeout, 429, 5xx) returns the same message."""
    return str(secrets.randbits(63))


class DiscordError(Exception):
    """A Discord REST call failed. `status` 0 = no HTTP response (network error / timeout)."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        code: int | None = None,
        retry_after: float | None = None,
        route: str = "",
        token_fp: str = "",
        errors: Any = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.route = route
        self.token_fp = token_fp
        self.errors = errors
        # Set by the REST client when an earlier attempt of this call failed ambiguously (a timeout,
        # 5xx, a network error): Discord may have carried that attempt out (a message may be posted).
        self.after_retry = False
        super().__init__(self.__str__())

    def __str__(self) -> str:
        parts = [f"Discord {self.route or 'request'}"]
        if self.status:
            parts.append(f"HTTP {self.status}")
        if self.code is not None:
            parts.append(f"code {self.code}")
        head = " ".join(parts)
        tail = f" [{self.token_fp}]" if self.token_fp else ""
        ra = f" (retry after {self.retry_after:.2f}s)" if self.retry_after is not None else ""
        return f"{head}: {self.message}{ra}{tail}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": type(self).__name__,
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "retry_after": self.retry_after,
            "route": self.route,
            "token": self.token_fp,
        }


class DiscordUnauthorized(DiscordError):
    """401: the token is invalid, reset or revoked. Stop using it."""


class DiscordForbidden(DiscordError):
    """403 (e.g. code 50013 missing permissions)."""


class DiscordVerificationRequired(DiscordForbidden):
    """403 "You need to verify your account in order to perform this action.": the user token is dead."""


class DiscordNotFound(DiscordError):
    """404 (e.g. 10003 unknown channel, 10008 unknown message)."""


class DiscordMaxChannels(DiscordError):
    """Code 30013: the guild reached its channel limit (500)."""


class DiscordInvalidForm(DiscordError):
    """Code 50035: invalid form body (`errors` holds Discord's details)."""


class DiscordRateLimited(DiscordError):
    """Still rate limited after waiting as long as allowed; `retry_after` says how long to back off."""


class DiscordUnavailable(DiscordError):
    """5xx, network error or timeout: Discord could not be reached or failed."""


def error_from_response(
    status: int, body: Any, *, route: str = "", token_fp: str = "", secrets: tuple[str | None, ...] = ()
) -> DiscordError:
    """Build the right exception from an HTTP error status and its (JSON or text) body."""
    code: int | None = None
    message = ""
    errors = None
    retry_after = None
    if isinstance(body, dict):
        raw_code = body.get("code")
        if isinstance(raw_code, int) or (isinstance(raw_code, str) and raw_code.isdigit()):
            code = int(raw_code)
        message = str(body.get("message") or "")
        errors = body.get("errors")
        if body.get("retry_after") is not None:
            try:
                retry_after = float(body["retry_after"])
            except (TypeError, ValueError):
                retry_after = None
    elif isinstance(body, str):
        message = body[:300]
    message = redact(message or f"HTTP {status}", *secrets)
    kw: dict[str, Any] = {
        "status": status,
        "code": code,
        "route": route,
        "token_fp": token_fp,
        "errors": errors,
        "retry_after": retry_after,
    }
    if code == CODE_MAX_CHANNELS:
        return DiscordMaxChannels(message, **kw)
    if code == CODE_INVALID_FORM:
        return DiscordInvalidForm(message, **kw)
    if status == 401:
        return DiscordUnauthorized(message, **kw)
    if status == 403:
        if VERIFY_ACCOUNT_TEXT.lower() in message.lower():
            return DiscordVerificationRequired(message, **kw)
        return DiscordForbidden(message, **kw)
    if status == 404:
        return DiscordNotFound(message, **kw)
    if status == 429:
        return DiscordRateLimited(message, **kw)
    if status >= 500:
        return DiscordUnavailable(message, **kw)
    return DiscordError(message, **kw)
