"""Configuration of the fake Discord server."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field


def make_token(user_id: str, tag: str) -> str:
    """A token in Discord's real format: base64(user id) . timestamp part . hmac part (hikari parses part 1)."""
    head = base64.b64encode(user_id.encode()).decode().rstrip("=")
    return f"{head}.GSimAA.{tag}"

# Application flags (https://discord.com/developers/docs/resources/application#application-object-application-flags)
GATEWAY_PRESENCE = 1 << 12
GATEWAY_PRESENCE_LIMITED = 1 << 13
GATEWAY_GUILD_MEMBERS = 1 << 14
GATEWAY_GUILD_MEMBERS_LIMITED = 1 << 15
GATEWAY_MESSAGE_CONTENT = 1 << 18  # bots in >= 100 servers
GATEWAY_MESSAGE_CONTENT_LIMITED = 1 << 19  # bots in < 100 servers (the portal toggle; our default)


@dataclass
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 0  # 0 = pick a free port

    guild_id: str = "1100000000000000001"
    guild_name: str = "CDP Sim Guild"
    channel_id: str = "1100000000000000002"  # text channel "general"
    category_id: str = "1100000000000000003"  # category "Text Channels"

    # A second server the CDP bot and the user accounts are also members of (the bot may manage its
    # channels there), and a direct-message channel between the first two user accounts: the places a
    # proxy must never post into or delete (GUILD_ID is its only server).
    other_guild_id: str = "1500000000000000001"
    other_channel_id: str = "1500000000000000002"  # text channel "elsewhere" of the other server
    dm_channel_id: str = "1500000000000000003"  # DM between the first two user accounts

    # the CDP bot (the listener, connects to the gateway)
    bot_token: str = make_token("1200000000000000001", "sim-bot-token-cdp-000000000000000000")
    bot_user_id: str = "1200000000000000001"
    application_id: str = "1200000000000000001"
    bot_name: str = "cdp-bot"
    app_flags: int = GATEWAY_MESSAGE_CONTENT_LIMITED  # 1 << 19; 0 => IDENTIFY with MESSAGE_CONTENT gets 4014
    app_public_key: str = "0" * 64  # the application's Ed25519 public key (hex), `verify_key` in GET /applications/@me

    # simulated Coze bots (user id -> name); tokens only matter for REST
    coze_bot_ids: list[str] = field(default_factory=lambda: ["1300000000000000001"])
    coze_bot_tokens: dict[str, str] = field(
        default_factory=lambda: {"1300000000000000001": make_token("1300000000000000001", "sim-bot-token-coze-00000000000000000")}
    )

    # user tokens (raw, no prefix) -> user id
    user_tokens: dict[str, str] = field(
        default_factory=lambda: {
            make_token("1400000000000000001", "sim-user-token-alice-00000000000000"): "1400000000000000001",
            make_token("1400000000000000002", "sim-user-token-bob-0000000000000000"): "1400000000000000002",
        }
    )
    owner_id: str = "1400000000000000001"
    # a plain member of the server that is no account of the proxy: who must not read private channels
    bystander_id: str = "1400000000000000009"
    bystander_token: str = make_token("1400000000000000009", "sim-user-token-eve-0000000000000000")

    # gateway
    heartbeat_interval_ms: int = 41250
    identify_timeout: float = 20.0
    resume_window: float = 180.0  # seconds a dropped session stays resumable
    replay_buffer: int = 5000
    gateway_send_limit: int = 120  # client payloads per 60 s
    session_start_total: int = 1000

    # coze simulation
    coze_edit_interval: float = 0.6
    coze_first_token_delay: float = 0.5
    coze_edits: int = 6  # number of text edits after the first create (approx.)

    # guild limits
    max_channels: int = 500

    # REST rate limits: route key -> (limit, per seconds). Route keys are "METHOD /template".
    rate_limits: dict[str, tuple[int, float]] = field(
        default_factory=lambda: {
            "POST /channels/{channel_id}/messages": (5, 5.0),
            "POST /guilds/{guild_id}/channels": (10, 10.0),
            "DELETE /channels/{channel_id}": (5, 5.0),
        }
    )
    default_rate_limit: tuple[int, float] = (50, 1.0)
    global_rate_limit: int = 50  # requests per second per token
    max_file_size: int = 10 * 1024 * 1024

    @property
    def all_coze_tokens(self) -> dict[str, str]:
        return {tok: uid for uid, tok in self.coze_bot_tokens.items()}
