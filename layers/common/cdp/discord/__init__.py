"""Discord adapters: REST client (httpx, bot and user tokens, rate limits) and gateway helpers."""

from cdp.discord.errors import (
    DiscordError,
    DiscordForbidden,
    DiscordInvalidForm,
    DiscordMaxChannels,
    DiscordNotFound,
    DiscordRateLimited,
    DiscordUnauthorized,
    DiscordUnavailable,
    DiscordVerificationRequired,
    fingerprint,
)
from cdp.discord.rest import DEFAULT_API_BASE, DiscordRest, UploadFile, new_nonce

__all__ = [
    "DEFAULT_API_BASE",
    "DiscordError",
    "DiscordForbidden",
    "DiscordInvalidForm",
    "DiscordMaxChannels",
    "DiscordNotFound",
    "DiscordRateLimited",
    "DiscordRest",
    "DiscordUnauthorized",
    "DiscordUnavailable",
    "DiscordVerificationRequired",
    "UploadFile",
    "fingerprint",
    "new_nonce",
]
