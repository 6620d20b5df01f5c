"""Discord adapters: REST client (httpx, bot and user tokens, rate limits) and gateway helpers."""

from cdp.adapters.discord.rest import DEFAULT_API_BASE, DiscordRest, new_nonce
from cdp.domain.discord import (
    DiscordError,
    DiscordForbidden,
    DiscordInvalidForm,
    DiscordMaxChannels,
    DiscordNotFound,
    DiscordRateLimited,
    DiscordUnauthorized,
    DiscordUnavailable,
    DiscordVerificationRequired,
)
from cdp.domain.secrets import fingerprint
from cdp.ports import UploadFile

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
