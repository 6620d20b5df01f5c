"""bot_config.json: finding, reading and validating the original's multi-bot file.

Where: BOT_CONFIG_PATH if set (then the file must exist), else the first of
`data/config/bot_config.json` (the original's container path, relative to the working directory)
and `config/bot_config.json`. No file = no bot config (every model is served by COZE_BOT_ID).

Format (as in the original): a JSON list of
`{"proxySecret": str, "cozeBotId": str, "model": [str, ...], "channelId"?: str, "messageMaxToken"?: int|str}`.
`BotConfigError` (a SettingsError, so `cdp serve` refuses to start) names every bad entry and field.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from cdp.domain.discord import is_snowflake
from cdp.domain.routing import BotEntry
from cdp.settings import Settings, SettingsError

log = logging.getLogger("cdp.adapters.botconfig")

DEFAULT_PATHS = ("data/config/bot_config.json", "config/bot_config.json")
KNOWN_FIELDS = {"proxySecret", "cozeBotId", "model", "channelId", "messageMaxToken"}


class BotConfigError(SettingsError):
    def __init__(self, path: str, problems: list[str]) -> None:
        super().__init__([f"bot config {path}: {p}" for p in problems])
        self.path = path


def find_path(settings: Settings, cwd: Path | None = None) -> Path | None:
    base = cwd or Path.cwd()
    explicit = settings.BOT_CONFIG_PATH
    if explicit.strip():
        p = Path(explicit.strip())
        return p if p.is_absolute() else base / p
    for rel in DEFAULT_PATHS:
        p = base / rel
        if p.is_file():
            return p
    return None


def parse_entries(data: Any, path: str = "bot_config.json") -> list[BotEntry]:
    """Validate parsed JSON; raise BotConfigError listing every problem (entry index and field)."""
    if not isinstance(data, list):
        raise BotConfigError(path, ["must be a JSON list of bot entries ([{...}, ...])"])
    problems: list[str] = []
    entries: list[BotEntry] = []
    for i, raw in enumerate(data):
        where = f"entry {i}"
        if not isinstance(raw, dict):
            problems.append(f"{where}: must be an object with proxySecret, cozeBotId and model")
            continue
        bad: list[str] = []
        secret = raw.get("proxySecret")
        if not isinstance(secret, str) or not secret.strip():
            bad.append(f"{where}, field proxySecret: required, a non-empty string (the caller's API key)")
        bot = raw.get("cozeBotId")
        if isinstance(bot, int) and not isinstance(bot, bool):
            bot = str(bot)
        if not isinstance(bot, str) or not is_snowflake(bot.strip()):
            bad.append(f"{where}, field cozeBotId: required, the Coze bot's Discord user id (15-21 digits)")
        models = raw.get("model")
        if isinstance(models, str):
            models = [models]
        if (not isinstance(models, list) or not models
                or not all(isinstance(m, str) and m.strip() for m in models)):
            bad.append(f"{where}, field model: required, a non-empty list of model names")
        channel = raw.get("channelId")
        if isinstance(channel, int) and not isinstance(channel, bool):
            channel = str(channel)
        if channel is not None and channel != "" and (not isinstance(channel, str)
                                                        or not is_snowflake(channel.strip())):
            bad.append(f"{where}, field channelId: must be a Discord channel id (15-21 digits) or absent")
        max_tok = raw.get("messageMaxToken")
        limit: int | None = None
        if max_tok is not None and max_tok != "":
            try:
                if isinstance(max_tok, bool) or isinstance(max_tok, float):
                    raise ValueError
                limit = int(str(max_tok).strip())
                if limit <= 0:
                    raise ValueError
            except ValueError:
                bad.append(f"{where}, field messageMaxToken: must be a positive whole number of tokens")
        unknown = sorted(set(raw) - KNOWN_FIELDS)
        if unknown:
            log.warning("bot config: unknown fields ignored", extra={"entry": i, "fields": unknown})
        if bad:
            problems += bad
            continue
        entries.append(BotEntry(proxy_secret=secret.strip(), coze_bot_id=bot.strip(),
                                models=tuple(dict.fromkeys(m.strip() for m in models)),
                                channel_id=(channel or "").strip() or None, message_max_token=limit,
                                index=i))
    if problems:
        raise BotConfigError(path, problems)
    if not entries:
        raise BotConfigError(path, ["the list is empty; remove the file or add at least one entry"])
    return entries


def load_bot_config(settings: Settings, cwd: Path | None = None) -> list[BotEntry]:
    """Entries of the bot config in use ([] when there is none). Raises BotConfigError."""
    path = find_path(settings, cwd)
    if path is None:
        return []
    shown = str(path)
    if not path.is_file():
        raise BotConfigError(shown, ["file not found (BOT_CONFIG_PATH points at it)"])
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise BotConfigError(shown, [f"cannot be read: {exc.strerror or exc}"]) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = " (JSON allows no // comments, unlike the example in the original README)" \
            if "//" in text else ""
        raise BotConfigError(shown, [f"not valid JSON at line {exc.lineno} column {exc.colno}: "
                                     f"{exc.msg}{hint}"]) from None
    entries = parse_entries(data, shown)
    keys = set(settings.api_keys)
    if keys:
        for e in entries:
            if e.proxy_secret not in keys:
                # Same as the original: such an entry can never be reached (the key is refused
                # before routing). A warning, not an error, so an unchanged file keeps working.
                log.warning("bot config entry's proxySecret is not one of PROXY_SECRET's keys; the entry "
                            "is unreachable", extra={"entry": e.index, "path": shown})
    return entries
