"""Builds the object graph from settings: one place for `cdp serve`, `cdp listener` and the Lambdas.

bot_config.json is read once per process, into the Router (`make_router`); whatever else needs its
entries (the listener's bot ids, the channel keeper's protected channels, keepalive) gets them from
that Router.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from cdp.domain.routing import BotEntry, Router
from cdp.ports import DiscordRestPort, ListenerPresence, ReplyStore, Stores
from cdp.settings import Settings

if TYPE_CHECKING:
    from cdp.app.conversation import ConversationService


def make_stores(settings: Settings) -> Stores:
    from cdp.adapters.blobs import make_blob_store

    if settings.CDP_STORE == "dynamodb":
        from cdp.adapters.store.dynamodb import dynamodb_stores

        stores = dynamodb_stores(settings)
        stores.blobs = make_blob_store(settings)
        return stores
    from cdp.adapters.store.leases import MemoryLeaseStore
    from cdp.adapters.store.memory import (
        MemoryAlertStore,
        MemoryChannelRegistry,
        MemoryConversationStore,
        MemoryHealthStore,
        MemoryPromptLedger,
        MemoryRateLimitStore,
        MemoryReplyStore,
    )

    return Stores(MemoryReplyStore(), MemoryChannelRegistry(), health=MemoryHealthStore(),
                  ratelimits=MemoryRateLimitStore(), alerts=MemoryAlertStore(), ledger=MemoryPromptLedger(),
                  blobs=make_blob_store(settings), conversations=MemoryConversationStore(),
                  leases=MemoryLeaseStore())


def make_rest(settings: Settings) -> DiscordRestPort:
    from cdp.adapters.discord.rest import DiscordRest

    return DiscordRest(api_base=settings.DISCORD_API_BASE, bot_token=settings.BOT_TOKEN,
                       user_agent=settings.USER_AGENT, proxy_url=settings.PROXY_URL or None)


def make_listener(settings: Settings, replies: ReplyStore, bot_ids: list[str] | None = None):
    """The gateway listener; it records the replies of `bot_ids` (default: every bot of the router)."""
    from cdp.adapters.discord.gateway import DiscordListener, GatewayStatus
    from cdp.adapters.discord.recorder import ReplyRecorder

    status = GatewayStatus()
    bots = make_router(settings).bot_ids() if bot_ids is None else bot_ids
    recorder = ReplyRecorder(replies, set(bots), settings.GUILD_ID)
    return DiscordListener(api_base=settings.DISCORD_API_BASE, bot_token=settings.BOT_TOKEN,
                           recorder=recorder, status=status, proxy_url=settings.PROXY_URL or None)


class StatusPresence:
    """Presence of an in-process listener, read from its GatewayStatus."""

    def __init__(self, status) -> None:
        self.status = status

    async def publish(self, ready: bool, since: float) -> None:
        """Nothing to record: the answering side reads the in-process listener's status directly."""

    async def stable_since(self) -> float | None:
        return self.status.recording_since if self.status.recording else None


def make_router(settings: Settings, entries: Sequence[BotEntry] | None = None) -> Router:
    """Routing by bot_config.json (validated: raises BotConfigError, a SettingsError). `entries`:
    the file as already read (the demo mode re-points the settings, not the file)."""
    if entries is None:
        from cdp.adapters.botconfig import load_bot_config

        entries = load_bot_config(settings)
    return Router(entries, settings.coze_bot_ids, strict=settings.STRICT_MODELS)


def make_service(settings: Settings, stores: Stores, rest: DiscordRestPort | None = None,
                 presence: ListenerPresence | None = None, router: Router | None = None) -> ConversationService:
    from cdp.adapters.store.leases import MemoryLeaseStore
    from cdp.adapters.store.memory import MemoryAlertStore, MemoryHealthStore, MemoryRateLimitStore
    from cdp.adapters.telegram import TelegramNotifier
    from cdp.app.alerts import Alerts
    from cdp.app.conversation import ConversationService
    from cdp.app.pool import AccountPool, BotHealth
    from cdp.app.queue import AccountQueue

    if stores.health is None:
        stores.health = MemoryHealthStore()
    if stores.ratelimits is None:
        stores.ratelimits = MemoryRateLimitStore()
    if stores.alerts is None:
        stores.alerts = MemoryAlertStore()
    if stores.leases is None:
        stores.leases = MemoryLeaseStore()
    alerts = Alerts(TelegramNotifier.from_settings(settings), stores.alerts, tz=settings.TZ)
    kw = {"tz": settings.TZ, "reset_time": settings.DAILY_RESET_TIME, "alerts": alerts}
    pool = AccountPool(settings.user_tokens, stores.health, **kw)
    return ConversationService(settings, rest or make_rest(settings), stores.replies, stores.channels,
                               presence=presence or stores.presence, router=router or make_router(settings),
                               pool=pool, bots=BotHealth(stores.health, **kw), alerts=alerts,
                               ratelimits=stores.ratelimits, ledger=stores.ledger,
                               conversations=stores.conversations, queue=AccountQueue(settings, pool, stores.leases))
