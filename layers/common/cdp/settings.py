"""Every setting, under the original coze-discord-proxy's names, validated once at start-up.

Read from the environment and from a `.env` file in the working directory (environment wins).
`load_settings()` raises `SettingsError` naming each missing or malformed setting.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cdp.domain.discord import DEFAULT_USER_AGENT, is_snowflake
from cdp.domain.housekeeping import STALE_IN_USE_SECONDS

# The four settings that say "talk to real Discord"; with none of them set, `cdp serve` runs the demo.
DISCORD_REQUIRED = ("USER_AUTHORIZATION", "BOT_TOKEN", "GUILD_ID", "COZE_BOT_ID")
LISTENER_REQUIRED = ("BOT_TOKEN", "GUILD_ID", "COZE_BOT_ID")  # the gateway listener never posts as a user
# The settings that are secrets, whole or in part (PROXY_URL: its password). `Settings.secrets()`
# gives their values for redaction; the AWS secret may hold exactly these.
SECRET_SETTINGS = ("USER_AUTHORIZATION", "BOT_TOKEN", "PROXY_SECRET", "PROXY_ADMIN_SECRET",
                   "NOTIFY_TELEGRAM_BOT_TOKEN", "PROXY_URL", "METRICS_TOKEN")
# HOST values that listen on this machine only (any 127.x.x.x and ::1 count too, see Settings.loopback).
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


# The longest a request may wait for its answer (REQUEST_OUT_TIME, STREAM_REQUEST_OUT_TIME, the out-time
# header): below the longest Lambda function timeout (900 s, the stream function in template.yaml) so
# the function still answers, and, with IMAGE_DOWNLOAD_TIMEOUT and the posting, below the age at which
# the cleanup takes a channel marked in use for stale (STALE_IN_USE_SECONDS, 960 s).
MAX_REQUEST_SECONDS = 840
# Bodies of the routes that take small JSON (/api/*, /interactions): larger ones are a 413.
SMALL_BODY_BYTES = 1024 * 1024


class SettingsError(ValueError):
    """Start-up refused: `problems` lists one line per bad setting."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid settings:\n" + "\n".join(f"  - {p}" for p in problems))


def _split_csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


class Settings(BaseSettings):
    """Every setting of every process (API, listener, Lambdas, stores); build it with `load_settings`."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore",
                                      case_sensitive=True, populate_by_name=True)

    # Discord (required together, or none of them for the demo)
    USER_AUTHORIZATION: str = ""
    BOT_TOKEN: str = ""
    GUILD_ID: str = ""
    COZE_BOT_ID: str = ""
    CHANNEL_ID: str = ""
    # API
    PROXY_SECRET: str = ""
    # Keys (comma-separated) for the routes that change or reveal state (channel deletion, /api/status);
    # empty = PROXY_SECRET's keys serve them too.
    PROXY_ADMIN_SECRET: str = ""
    # 1 = `cdp serve` may listen beyond loopback without PROXY_SECRET (an API open to anyone who reaches it)
    ALLOW_OPEN_API: bool = False
    HOST: str = "0.0.0.0"
    PORT: int = Field(7077, ge=1, le=65535)
    SWAGGER_ENABLE: bool = True
    ONLY_OPENAI_API: bool = False
    # Conversation
    DEFAULT_CHANNEL_ENABLE: bool = False
    ALL_DIALOG_RECORD_ENABLE: bool = True
    CHANNEL_AUTO_DEL_TIME: float = Field(5, ge=0)
    # Temporary conversation channels readable only by the CDP bot, the posting account and the Coze
    # bot (permission overwrites; the bot needs Manage Roles). 0 = visible to the whole server.
    TEMP_CHANNEL_PRIVATE: bool = True
    COZE_BOT_STAY_ACTIVE_ENABLE: bool = True
    REQUEST_OUT_TIME: float = Field(60, gt=0, le=MAX_REQUEST_SECONDS)
    STREAM_REQUEST_OUT_TIME: float = Field(60, gt=0, le=MAX_REQUEST_SECONDS)
    REPLY_IDLE_TIMEOUT: float = Field(15, gt=0)
    # Characters a stream keeps back beyond the minimal tail (cdp.domain.stream): 0 = each edit at once.
    STREAM_HOLDBACK: int = Field(0, ge=0, le=2000)
    REQUEST_RATE_LIMIT: int = Field(60, ge=0)
    MESSAGE_MAX_TOKEN: int = Field(128000, gt=0)
    # Bounded work per request (cdp.app.conversation.build_prompt), all refused with a 400 before
    # anything is posted: Discord messages one prompt may become, messages in a request, characters of
    # the request's message text. REQUEST_MAX_BODY_BYTES: larger /v1 bodies are a 413 before parsing;
    # 0 = room for UPLOAD_MAX_TOTAL_BYTES of base64 plus 1 MiB.
    PROMPT_MAX_PARTS: int = Field(10, ge=1, le=100)
    PROMPT_MAX_MESSAGES: int = Field(1000, ge=1)
    PROMPT_MAX_CHARS: int = Field(200_000, ge=1)
    REQUEST_MAX_BODY_BYTES: int = Field(0, ge=0)
    MAX_CHANNEL_DEL_TYPE: Literal["ALL", "OLDEST", ""] = ""
    # Many bots and accounts (cdp.adapters.botconfig, cdp.app.pool)
    BOT_CONFIG_PATH: str = ""  # empty = data/config/bot_config.json, then config/bot_config.json
    DAILY_RESET_TIME: str = "00:00"  # HH:MM in TZ when resting accounts/bots (Coze daily limit) come back
    # Client IP for REQUEST_RATE_LIMIT from X-Forwarded-For; empty = on in AWS Lambda, off elsewhere
    TRUST_PROXY_HEADERS: bool | None = None
    # Network
    USER_AGENT: str = DEFAULT_USER_AGENT
    PROXY_URL: str = ""
    DISCORD_API_BASE: str = "https://discord.com/api/v10"
    # Interactions endpoint (slash commands): the application's PUBLIC KEY (Developer Portal →
    # General Information); empty = /interactions answers 503.
    DISCORD_PUBLIC_KEY: str = ""
    # Alerts and jobs
    NOTIFY_TELEGRAM_BOT_TOKEN: str = ""
    NOTIFY_TELEGRAM_USER_ID: str = ""
    TELEGRAM_API_BASE: str = "https://api.telegram.org"  # Telegram Bot API base (tests: a local fake)
    # CDP_TZ wins over TZ: Lambda reserves TZ (it is always ":UTC" there), so the template sets CDP_TZ.
    TZ: str = Field("UTC", validation_alias=AliasChoices("CDP_TZ", "TZ"))
    KEEPALIVE_TIME: str = "09:10"  # daily keepalive (COZE_BOT_STAY_ACTIVE_ENABLE), HH:MM in TZ
    CLEANUP_INTERVAL: float = Field(5, gt=0)  # seconds between `cdp serve`'s due-channel deletions
    CHANNEL_SWEEP_AGE: float = Field(3600, ge=0)  # stray cdp-chat-* channels older than this go; 0 = off
    CHANNEL_SWEEP_INTERVAL: float = Field(600, gt=0)  # seconds between `cdp serve`'s stray sweeps
    # Runtime
    CDP_STORE: Literal["memory", "dynamodb"] = "memory"
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # DynamoDB (CDP_STORE=dynamodb, cdp.adapters.store.dynamodb). The endpoint settings are boto3's own
    # names, read here too so a `.env` file works (moto, DynamoDB Local, LocalStack).
    CDP_TABLE_PREFIX: str = "cdp"
    CDP_REPLIES_TABLE: str = ""  # empty = <prefix>-replies
    CDP_STATE_TABLE: str = ""  # empty = <prefix>-state
    CDP_REPLY_TTL_SECONDS: int = 24 * 3600  # TTL of reply items (a reply is read within minutes)
    AWS_ENDPOINT_URL_DYNAMODB: str = ""
    AWS_ENDPOINT_URL: str = ""
    AWS_REGION: str = ""
    AWS_DEFAULT_REGION: str = ""
    # Images and files (cdp.domain.images, cdp.adapters.media, cdp.adapters.blobs)
    FILES_DIR: str = "./data/files"  # re-hosted images, served under /files/<random>.<ext>
    FILES_RETENTION_DAYS: float = Field(30, ge=0)  # re-hosted images older than this are deleted; 0 = keep
    PUBLIC_BASE_URL: str = ""  # e.g. https://cdp.example.com; empty = the request's own base URL
    BLOB_BUCKET: str = ""  # S3 bucket for re-hosted images (AWS); empty = the FILES_DIR folder
    UPLOAD_MAX_FILE_BYTES: int = Field(10 * 1024 * 1024, gt=0)  # per inline image/file (Discord's default)
    UPLOAD_MAX_TOTAL_BYTES: int = Field(25 * 1024 * 1024, gt=0)  # all inline images/files of a request
    IMAGE_MAX_DOWNLOAD_BYTES: int = Field(25 * 1024 * 1024, gt=0)  # per image fetched from Coze's reply
    IMAGES_MAX_N: int = Field(4, ge=1, le=10)  # largest `n` of /v1/images/generations
    # One request's downloads of the images in Coze's replies: one deadline and one byte budget in total.
    IMAGE_DOWNLOAD_TIMEOUT: float = Field(60, gt=0, le=120)
    IMAGE_DOWNLOAD_TOTAL_BYTES: int = Field(50 * 1024 * 1024, gt=0)
    # Sticky conversations (cdp.app.sticky): "fresh" = a new channel per request (the original);
    # "sticky" = a conversation continues in its channel, only the new user turn is posted.
    CONVERSATION_MODE: Literal["fresh", "sticky"] = "fresh"
    CONVERSATION_IDLE_TTL: float = Field(1800, gt=0)  # seconds an idle sticky channel is kept
    # Temporary channels at most (all kinds) before the least recently used idle sticky one is released.
    CONVERSATION_CHANNEL_BUDGET: int = Field(400, ge=1, le=490)
    METRICS_TOKEN: str = ""  # comma-separated bearer tokens that may read /metrics only (scrapers)
    # Without bot_config.json: refuse model names that /v1/models does not list (404 model_not_found)
    # instead of serving every name with COZE_BOT_ID (the original's behaviour, the default).
    STRICT_MODELS: bool = False
    # tools / tool_choice / response_format emulated through the prompt (cdp.domain.tools); 0 = ignored
    TOOLS_EMULATION: bool = True
    # Fair queue per Discord user account (cdp.app.queue): prompts in flight per account, seconds between
    # two posts of one account, requests waiting at most (per process), seconds one may wait (else 429).
    ACCOUNT_MAX_CONCURRENT: int = Field(1, ge=1, le=1000)
    ACCOUNT_MIN_GAP: float = Field(2.0, ge=0, le=600)
    QUEUE_MAX_SIZE: int = Field(100, ge=1, le=100_000)
    QUEUE_MAX_WAIT: float = Field(30.0, ge=0, le=MAX_REQUEST_SECONDS)

    @model_validator(mode="after")
    def _bounded_timeouts(self) -> Settings:
        longest = max(self.REQUEST_OUT_TIME, self.STREAM_REQUEST_OUT_TIME) + self.IMAGE_DOWNLOAD_TIMEOUT
        if longest >= STALE_IN_USE_SECONDS:
            raise ValueError(f"REQUEST_OUT_TIME/STREAM_REQUEST_OUT_TIME + IMAGE_DOWNLOAD_TIMEOUT must stay below "
                             f"{STALE_IN_USE_SECONDS} s (the age at which a channel in use counts as stale)")
        return self

    @field_validator("PUBLIC_BASE_URL", mode="after")
    @classmethod
    def _public_base(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if v and not re.match(r"^https?://[^/\s]+(/\S*)?$", v):
            raise ValueError("must be the proxy's public http(s) URL, such as https://cdp.example.com")
        return v

    @field_validator("GUILD_ID", "CHANNEL_ID", "COZE_BOT_ID", mode="after")
    @classmethod
    def _snowflake(cls, v: str) -> str:
        v = v.strip()
        if v and not is_snowflake(v):
            raise ValueError("must be a Discord id (a snowflake: 15-21 digits); right-click → Copy ID")
        return v

    @field_validator("MAX_CHANNEL_DEL_TYPE", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.strip().upper() if isinstance(v, str) else v

    @field_validator("KEEPALIVE_TIME", mode="after")
    @classmethod
    def _time_of_day(cls, v: str) -> str:
        from cdp.domain.schedule import parse_time_of_day

        parse_time_of_day(v)
        return v.strip()

    @field_validator("TZ", mode="after")
    @classmethod
    def _zone(cls, v: str) -> str:
        from cdp.domain.schedule import zone

        v = v.strip().removeprefix(":") or "UTC"  # POSIX allows TZ=:Area/City
        zone(v)
        return v

    @field_validator("DAILY_RESET_TIME", mode="after")
    @classmethod
    def _reset_time(cls, v: str) -> str:
        from cdp.domain.accounts import parse_reset_time

        return parse_reset_time(v).strftime("%H:%M")

    @field_validator("TELEGRAM_API_BASE", mode="after")
    @classmethod
    def _telegram_base(cls, v: str) -> str:
        v = v.strip().rstrip("/") or "https://api.telegram.org"
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http(s) URL such as https://api.telegram.org")
        return v

    @field_validator("TRUST_PROXY_HEADERS", mode="before")
    @classmethod
    def _auto(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("DISCORD_API_BASE", mode="after")
    @classmethod
    def _base(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http(s) URL such as https://discord.com/api/v10")
        return v

    @field_validator("DISCORD_PUBLIC_KEY", mode="after")
    @classmethod
    def _public_key(cls, v: str) -> str:
        v = v.strip().lower()
        if v and not re.match(r"^[0-9a-f]{64}$", v):
            raise ValueError("must be the application's public key: 64 hex characters (Developer Portal → "
                             "General Information → Public Key)")
        return v

    @field_validator("PROXY_URL", mode="after")
    @classmethod
    def _proxy(cls, v: str) -> str:
        v = v.strip()
        if v and not re.match(r"^(https?|socks5h?)://[^\s]+$", v):
            raise ValueError("must look like http://host:port or socks5://host:port")
        return v

    @field_validator("BOT_TOKEN", "USER_AUTHORIZATION", mode="after")
    @classmethod
    def _no_prefix(cls, v: str) -> str:
        v = v.strip()
        for token in _split_csv(v):
            if token.lower().startswith(("bot ", "bearer ")):
                raise ValueError("give the bare token, without a 'Bot ' or 'Bearer ' prefix")
            if any(c.isspace() for c in token):
                raise ValueError("a token must not contain spaces")
        return v

    # Derived views -------------------------------------------------------------------------
    @property
    def demo(self) -> bool:
        """No Discord settings at all: run against the built-in simulated guild and Coze bot."""
        return not (self.USER_AUTHORIZATION or self.BOT_TOKEN or self.GUILD_ID or self.COZE_BOT_ID)

    @property
    def user_tokens(self) -> list[str]:
        return _split_csv(self.USER_AUTHORIZATION)

    @property
    def trust_proxy_headers(self) -> bool:
        """TRUST_PROXY_HEADERS, or by default: on in AWS Lambda (behind API Gateway), off elsewhere."""
        if self.TRUST_PROXY_HEADERS is not None:
            return self.TRUST_PROXY_HEADERS
        import os

        return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))

    @property
    def api_keys(self) -> list[str]:
        return _split_csv(self.PROXY_SECRET)

    @property
    def admin_keys(self) -> list[str]:
        """PROXY_ADMIN_SECRET's keys; empty = the admin routes take PROXY_SECRET's keys."""
        return _split_csv(self.PROXY_ADMIN_SECRET)

    @property
    def loopback(self) -> bool:
        """HOST listens on this machine only (127.0.0.0/8, ::1, localhost)."""
        import ipaddress

        host = self.HOST.strip().strip("[]").lower()
        if host in LOOPBACK_HOSTS:
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    @property
    def open_api(self) -> bool:
        """No PROXY_SECRET while listening beyond loopback: anyone who reaches the port may chat."""
        return not self.api_keys and not self.loopback

    @property
    def coze_bot_ids(self) -> list[str]:
        return _split_csv(self.COZE_BOT_ID)

    @property
    def proxy_password(self) -> str | None:
        return urlsplit(self.PROXY_URL).password if self.PROXY_URL else None

    @property
    def metrics_tokens(self) -> list[str]:
        """METRICS_TOKEN's tokens: /metrics only."""
        return _split_csv(self.METRICS_TOKEN)

    def secrets(self) -> list[str]:
        """The values of SECRET_SETTINGS (each token of a list, the proxy's password), for redaction."""
        values = [*self.user_tokens, self.BOT_TOKEN, *self.api_keys, *self.admin_keys,
                  self.NOTIFY_TELEGRAM_BOT_TOKEN, self.proxy_password, *self.metrics_tokens]
        return [v for v in values if v]

    @property
    def max_body_bytes(self) -> int:
        """REQUEST_MAX_BODY_BYTES, or room for UPLOAD_MAX_TOTAL_BYTES as base64 plus 1 MiB of JSON."""
        return self.REQUEST_MAX_BODY_BYTES or (self.UPLOAD_MAX_TOTAL_BYTES * 4 // 3 + 1024 * 1024)

    @property
    def replies_table(self) -> str:
        return self.CDP_REPLIES_TABLE or f"{self.CDP_TABLE_PREFIX}-replies"

    @property
    def state_table(self) -> str:
        return self.CDP_STATE_TABLE or f"{self.CDP_TABLE_PREFIX}-state"

    @property
    def dynamodb_endpoint(self) -> str | None:
        return self.AWS_ENDPOINT_URL_DYNAMODB or self.AWS_ENDPOINT_URL or None

    @property
    def aws_region(self) -> str | None:
        """AWS_REGION (set by Lambda) or AWS_DEFAULT_REGION; None = boto3's own configuration."""
        return self.AWS_REGION or self.AWS_DEFAULT_REGION or None


_WHY = {
    "USER_AUTHORIZATION": "comma-separated Discord user tokens (browser devtools → a request's Authorization header)",
    "BOT_TOKEN": "token of the CDP (listening) bot from the Developer Portal",
    "GUILD_ID": "id of the server where both bots are (right-click the server → Copy Server ID)",
    "COZE_BOT_ID": "user id of the bot Coze publishes to (right-click it → Copy User ID)",
    "CHANNEL_ID": "required when DEFAULT_CHANNEL_ENABLE=1",
}


class _Presence(BaseSettings):
    """Same sources as Settings, no validation: tells which settings are present at all."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore",
                                      case_sensitive=True)
    USER_AUTHORIZATION: str = ""
    BOT_TOKEN: str = ""
    GUILD_ID: str = ""
    COZE_BOT_ID: str = ""
    CHANNEL_ID: str = ""
    DEFAULT_CHANNEL_ENABLE: str = ""


def _missing(overrides: dict[str, object], required: tuple[str, ...] = DISCORD_REQUIRED) -> list[str]:
    raw = _Presence(**{k: str(v) for k, v in overrides.items() if k in _Presence.model_fields}).model_dump()
    present = [n for n in required if raw[n].strip()]
    missing = [n for n in required if not raw[n].strip()] if present else []
    if present and raw["DEFAULT_CHANNEL_ENABLE"].strip().lower() in ("1", "true", "yes", "on") \
            and not raw["CHANNEL_ID"].strip():
        missing.append("CHANNEL_ID")
    return [f"{name} is missing: {_WHY[name]}" for name in missing]


def load_settings(*, required: tuple[str, ...] = DISCORD_REQUIRED, **overrides: object) -> Settings:
    """Build settings from env/.env (+ overrides, for tests). Raises SettingsError listing every problem.
    `required`: the Discord settings this process needs (the listener: LISTENER_REQUIRED)."""
    problems = _missing(overrides, required)
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = str(err.get("msg", "")).removeprefix("Value error, ")
            # never echo the input value: it may be a secret
            problems.append(f"{loc} is malformed: {msg}" if loc else msg)
        raise SettingsError(problems) from None
    if problems:
        raise SettingsError(problems)
    return settings
