"""Builds the object graph from settings: one place for `cdp serve`, `cdp listener` and the Lambdas."""

from __future__ import annotations

from dataclasses import dataclass

from cdp.settings import Settings
from cdp.store.ports import ChannelRegistry, ListenerPresence, ReplyStore


@dataclass
class Stores:
    replies: ReplyStore
    channels: ChannelRegistry
    presence: ListenerPresence | None = None  # shared stores: the external listener's heartbeat


def make_stores(settings: Settings) -> Stores:
    if settings.CDP_STORE == "dynamodb":
        from cdp.store.dynamodb import dynamodb_stores

        return dynamodb_stores(settings)
    from cdp.store.memory import MemoryChannelRegistry, MemoryReplyStore

    return Stores(MemoryReplyStore(), MemoryChannelRegistry())


def make_rest(settings: Settings):
    from cdp.discord.rest import DiscordRest

    return DiscordRest(api_base=settings.DISCORD_API_BASE, bot_token=settings.BOT_TOKEN,
                       user_agent=settings.USER_AGENT, proxy_url=settings.PROXY_URL or None)


def make_listener(settings: Settings, replies: ReplyStore):
    from cdp.listener import DiscordListener, GatewayStatus, ReplyRecorder

    status = GatewayStatus()
    recorder = ReplyRecorder(replies, set(settings.coze_bot_ids), settings.GUILD_ID)
    return DiscordListener(api_base=settings.DISCORD_API_BASE, bot_token=settings.BOT_TOKEN,
                           recorder=recorder, status=status, proxy_url=settings.PROXY_URL or None)


class StatusPresence:
    """Presence of an in-process listener, read from its GatewayStatus."""

    def __init__(self, status) -> None:
        self.status = status

    async def stable_since(self) -> float | None:
        return self.status.since if self.status.ready else None


def make_service(settings: Settings, stores: Stores, rest=None, presence: ListenerPresence | None = None):
    from cdp.service import ConversationService

    return ConversationService(settings, rest or make_rest(settings), stores.replies, stores.channels,
                               presence=presence or stores.presence)
