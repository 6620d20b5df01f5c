"""Gateway events (CDP bot) -> ReplyStore.

`ReplyRecorder` turns raw MESSAGE_CREATE / MESSAGE_UPDATE dispatch data into ReplyMessages (partial
updates merged onto the last full state). `DiscordListener` keeps a hikari GatewayBot connected
(heartbeats, zombie detection, RESUME, op 7 / op 9 and zlib-stream are hikari's) and feeds the raw
payloads to the recorder in arrival order. It never reconnects after a fatal close code (4004, 4010
to 4014) or a 401 on GET /gateway/bot: status "failed" with the exact fix, logged once at ERROR.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote, urlsplit

from cdp.domain.model import ReplyMessage
from cdp.domain.reply import merge_message, to_reply_message, version_of
from cdp.domain.secrets import fingerprint, redact
from cdp.ports import ReplyStore

log = logging.getLogger("cdp.adapters.discord.gateway")

# GUILDS | GUILD_MESSAGES | MESSAGE_CONTENT
INTENT_GUILDS = 1 << 0
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_MESSAGE_CONTENT = 1 << 15
DEFAULT_INTENTS = INTENT_GUILDS | INTENT_GUILD_MESSAGES | INTENT_MESSAGE_CONTENT  # 33281

_TOKEN_FIX = (
    "BOT_TOKEN is invalid or was reset: copy the current token of the CDP bot from the Discord "
    "Developer Portal → Applications → your CDP bot → Bot → Reset Token, put it in BOT_TOKEN and "
    "restart the listener"
)
FATAL_CLOSE_CODES: dict[int, tuple[str, str]] = {
    4004: ("Authentication failed (close 4004)", _TOKEN_FIX),
    4010: (
        "Invalid shard (close 4010)",
        (
            "The listener runs a single shard [0, 1]: remove any shard settings and restart; if it persists "
            "DISCORD_API_BASE does not point at Discord's API"
        ),
    ),
    4011: (
        "Sharding required (close 4011)",
        (
            "The CDP bot is in too many guilds for one gateway connection: use a dedicated bot that is only "
            "in GUILD_ID (remove it from the other servers) and restart"
        ),
    ),
    4012: (
        "Invalid API version (close 4012)",
        (
            "DISCORD_API_BASE must be Discord's v10 API, e.g. https://discord.com/api/v10 (check the setting "
            "and any mirror/proxy in front of Discord)"
        ),
    ),
    4013: (
        "Invalid intents (close 4013)",
        (
            "The listener sent an invalid intents value; it must be 33281 (GUILDS | GUILD_MESSAGES | "
            "MESSAGE_CONTENT): this is a bug, report it"
        ),
    ),
    4014: (
        "Disallowed intent (close 4014): the Message Content intent is not enabled",
        (
            "Enable the Message Content intent for the CDP bot (BOT_TOKEN) in the Discord Developer Portal → "
            "Bot → Privileged Gateway Intents (MESSAGE CONTENT INTENT: on), save, then restart the listener"
        ),
    ),
}
HTTP_401 = ("GET /gateway/bot answered 401 Unauthorized", _TOKEN_FIX)
MALFORMED_TOKEN = (
    "BOT_TOKEN is not a Discord bot token",
    (
        "BOT_TOKEN is malformed: copy the token of the CDP bot from the Discord Developer Portal → Bot → "
        "Reset Token (three dot-separated parts, no 'Bot ' prefix, no quotes or spaces) and restart"
    ),
)

STATES = ("starting", "connecting", "ready", "resuming", "failed", "stopped")


# ------------------------------------------------------------------------------------------------
# status


class GatewayStatus:
    """What the listener is doing, for health checks and `cdp doctor`."""

    def __init__(self) -> None:
        self.state = "starting"
        self.detail = ""
        self.close_code: int | None = None
        self.fix: str | None = None
        self.since = time.time()
        self.ready_count = 0
        self.resumes = 0
        self._waiters: set[asyncio.Future[None]] = set()

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def failed(self) -> bool:
        return self.state == "failed"

    def set(
        self, state: str, detail: str = "", *, close_code: int | None = None, fix: str | None = None
    ) -> None:
        if state not in STATES:
            raise ValueError(f"unknown gateway state {state!r}")
        if state != self.state:
            self.since = time.time()
        self.state = state
        self.detail = detail
        self.close_code = close_code
        self.fix = fix
        for fut in list(self._waiters):
            if not fut.done():
                fut.set_result(None)
        self._waiters.clear()

    async def wait_change(self, timeout: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(fut)

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "ready": self.ready,
            "detail": self.detail,
            "close_code": self.close_code,
            "fix": self.fix,
            "since": self.since,
            "ready_count": self.ready_count,
            "resumes": self.resumes,
        }

    def __repr__(self) -> str:
        return f"GatewayStatus({self.to_dict()!r})"


# ------------------------------------------------------------------------------------------------
# recorder


@dataclass(slots=True)
class _Seen:
    raw: dict
    version: int
    prompt_id: str


def _raw_from_reply(m: ReplyMessage) -> dict:
    """A message object equivalent (for to_reply_message) to a stored ReplyMessage."""
    raw: dict[str, Any] = {
        "id": m.message_id,
        "channel_id": m.channel_id,
        "author": {"id": m.author_id, "bot": True},
        "content": m.content,
        "message_reference": {"message_id": m.prompt_id, "channel_id": m.channel_id},
        "embeds": [{"image": {"url": u}} for u in m.image_urls],
        "attachments": [],
        "components": [],
    }
    if m.has_components:
        raw["components"] = [
            {"type": 1, "components": [{"type": 2, "style": 2, "label": s} for s in m.suggestions]}
        ]
    return raw


class ReplyRecorder:
    """Raw MESSAGE_CREATE / MESSAGE_UPDATE data -> ReplyStore.put (Coze bots' replies only)."""

    def __init__(
        self,
        store: ReplyStore,
        coze_bot_ids: set[str],
        guild_id: str | None = None,
        *,
        max_cached: int = 5000,
    ) -> None:
        self.store = store
        self.coze_bot_ids = {str(i) for i in coze_bot_ids}
        self.guild_id = str(guild_id) if guild_id else None
        self.max_cached = max_cached
        self._seen: OrderedDict[str, _Seen] = OrderedDict()
        self._lock = asyncio.Lock()
        self.recorded = 0
        self.ignored = 0

    async def on_message_create(self, payload: dict) -> None:
        await self._handle(payload)

    async def on_message_update(self, payload: dict) -> None:
        await self._handle(payload)

    async def _handle(self, payload: dict) -> None:
        if not isinstance(payload, dict) or not payload.get("id"):
            return
        mid = str(payload["id"])
        gid = payload.get("guild_id")
        if self.guild_id and gid and str(gid) != self.guild_id:
            self.ignored += 1
            return
        author = payload.get("author")
        if (
            isinstance(author, dict)
            and author.get("id") is not None
            and str(author["id"]) not in self.coze_bot_ids
        ):
            self.ignored += 1
            return
        async with self._lock:  # events of one message are applied in arrival order
            msg = await self._merge(mid, payload)
            if msg is None:
                return
        await self.store.put(msg)
        self.recorded += 1

    async def _merge(self, mid: str, payload: dict) -> ReplyMessage | None:
        seen = self._seen.get(mid)
        prompt_id: str | None = seen.prompt_id if seen else None
        base: dict | None = seen.raw if seen else None
        prev_version: int | None = seen.version if seen else None
        has_ref = isinstance(payload.get("message_reference"), dict) or isinstance(
            payload.get("referenced_message"), dict
        )
        if seen is None and not has_ref:
            # a partial update of a message we no longer (or never) had in memory
            prompt_id = await self.store.prompt_for_reply(mid)
            if prompt_id is None:
                self.ignored += 1
                return None
            snap = await self.store.snapshot(prompt_id)
            stored = next((m for m in snap.messages if m.message_id == mid), None)
            if stored is not None:
                base = _raw_from_reply(stored)
                prev_version = stored.version

        incoming = version_of(payload)
        if prev_version is not None and incoming is not None and incoming < prev_version:
            return None  # stale (late, out-of-order) event: never move a reply backwards

        merged = merge_message(base, payload)
        msg = to_reply_message(merged, self.coze_bot_ids, prompt_id=prompt_id, fallback_version=prev_version)
        if msg is None:
            self.ignored += 1
            return None
        if prev_version is not None and incoming is None:
            # An update without timestamps (partial: only embeds / components...) has no version of
            # its own: keep the previous one if nothing changed, else move it by 1 µs (an equal-version
            # overwrite would not change the snapshot's revision, so waiters would miss the new data).
            prev_msg = None
            if seen is not None:
                prev_msg = to_reply_message(
                    seen.raw, self.coze_bot_ids, prompt_id=seen.prompt_id, fallback_version=seen.version
                )
            elif base is not None:
                prev_msg = to_reply_message(base, self.coze_bot_ids, prompt_id=prompt_id, fallback_version=0)
            changed = prev_msg is None or replace(prev_msg, version=0) != replace(msg, version=0)
            msg = replace(msg, version=prev_version + 1 if changed else prev_version)
        self._seen[mid] = _Seen(merged, msg.version, msg.prompt_id)
        self._seen.move_to_end(mid)
        while len(self._seen) > self.max_cached:
            self._seen.popitem(last=False)
        return msg


# ------------------------------------------------------------------------------------------------
# PROXY_URL for the gateway (hikari: its REST calls such as GET /gateway/bot, and every shard)


class ProxyUnsupported(Exception):
    """PROXY_URL cannot be honoured by the gateway connection: the listener fails rather than
    connecting around the proxy."""

    def __init__(self, detail: str, fix: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fix = fix


_PROXY_SCHEMES_FIX = (
    "PROXY_URL must be http://host:port, https://host:port, socks5://host:port or socks5h://host:port "
    "(user:password@ allowed)"
)
_socks_settings_cls: Any = None


def proxy_label(proxy_url: str | None) -> str:
    """The proxy without its credentials, for logs and status."""
    if not proxy_url:
        return ""
    u = urlsplit(proxy_url)
    return f"{u.scheme}://{u.hostname}:{u.port}" if u.port else f"{u.scheme}://{u.hostname}"


def hikari_proxy_kwargs(proxy_url: str | None) -> dict[str, Any]:
    """GatewayBot keyword arguments that send hikari's REST calls and websockets through `proxy_url`.

    http(s):// -> hikari's own ProxySettings (aiohttp's HTTP proxy: CONNECT for https/wss).
    socks5:// and socks5h:// -> an aiohttp-socks connector for every connection hikari opens (see
    _install_socks_hook); both let the proxy resolve host names, as httpx does for DiscordRest.
    Raises ProxyUnsupported when the proxy cannot be honoured (never a silent direct connection)."""
    if not proxy_url:
        return {}
    from hikari.impl import config as hconfig

    scheme = urlsplit(proxy_url).scheme.lower()
    if scheme in ("http", "https"):
        return {"proxy_settings": hconfig.ProxySettings(url=proxy_url)}
    if scheme in ("socks5", "socks5h"):
        return {"http_settings": _install_socks_hook()(socks_url=proxy_url)}
    raise ProxyUnsupported(f"PROXY_URL scheme {scheme!r} is not supported by the gateway listener",
                           _PROXY_SCHEMES_FIX)


def _install_socks_hook() -> type:
    """SOCKS for hikari, through its one private seam; returns the HTTPSettings subclass to use.

    hikari (2.x) has no public hook for the aiohttp connector: its REST client (RESTClientImpl.start)
    and each shard's websocket (_GatewayTransport.connect) build theirs with the private
    hikari.internal.net.create_tcp_connector(http_settings). We wrap that function once per process:
    for a bot whose HTTPSettings is our subclass (it carries the SOCKS URL) it returns aiohttp-socks'
    ProxyConnector (a TCPConnector: same settings, every connection through the proxy); for every
    other bot it calls hikari's function unchanged. We first check that this hikari still builds both
    connectors through that function (checked with hikari 2.7); if not, ProxyUnsupported."""
    global _socks_settings_cls
    if _socks_settings_cls is not None:
        return _socks_settings_cls
    import inspect

    import attrs
    import hikari
    from hikari.impl import config as hconfig
    from hikari.impl import rest as hrest
    from hikari.impl import shard as hshard
    from hikari.internal import net

    try:
        from aiohttp_socks import ProxyConnector, ProxyType
    except ImportError:
        raise ProxyUnsupported("PROXY_URL is a SOCKS proxy but aiohttp-socks is not installed",
                               "pip install aiohttp-socks (a dependency of cdp: reinstall the package), "
                               "or use an http:// proxy") from None
    try:
        sources = [inspect.getsource(hrest.RESTClientImpl.start),
                   inspect.getsource(hshard._GatewayTransport.connect)]
        seam_ok = (str(hikari.__version__).startswith("2.") and callable(net.create_tcp_connector)
                   and all("net.create_tcp_connector(" in src and "TCPConnector(" not in src
                           and "ClientSession(" not in src for src in sources))
    except (AttributeError, OSError, TypeError):
        seam_ok = False
    if not seam_ok:
        raise ProxyUnsupported(
            f"PROXY_URL is a SOCKS proxy, which the listener cannot apply to hikari "
            f"{getattr(hikari, '__version__', '?')} (it no longer builds its connections through "
            f"hikari.internal.net.create_tcp_connector)",
            "use an http:// proxy for PROXY_URL, or install hikari 2.7 (pip install 'hikari==2.7.*')")

    @attrs.define(kw_only=True, weakref_slot=False)
    class SocksHTTPSettings(hconfig.HTTPSettings):
        socks_url: str = attrs.field(default="", repr=False)  # may hold credentials

    original = net.create_tcp_connector

    def create_tcp_connector(http_settings: Any, *, dns_cache: bool | int = True) -> Any:
        if not isinstance(http_settings, SocksHTTPSettings):
            return original(http_settings, dns_cache=dns_cache)
        u = urlsplit(http_settings.socks_url)
        return ProxyConnector(
            proxy_type=ProxyType.SOCKS5, host=u.hostname or "", port=u.port or 1080,
            username=unquote(u.username) if u.username else None,
            password=unquote(u.password) if u.password else None,
            rdns=True,  # names are resolved by the proxy, for socks5:// as for socks5h://
            enable_cleanup_closed=http_settings.enable_cleanup_closed,
            force_close=http_settings.force_close_transports,
            limit=http_settings.connection_limit, ssl=http_settings.ssl)

    net.create_tcp_connector = create_tcp_connector
    _socks_settings_cls = SocksHTTPSettings
    return SocksHTTPSettings


# ------------------------------------------------------------------------------------------------
# listener


class DiscordListener:
    """Keeps the CDP bot on the Gateway (hikari) and records Coze replies."""

    def __init__(
        self,
        *,
        api_base: str,
        bot_token: str,
        recorder: ReplyRecorder,
        status: GatewayStatus | None = None,
        proxy_url: str | None = None,
        intents: int = DEFAULT_INTENTS,
        max_backoff: float = 60.0,
    ) -> None:
        self.api_base = api_base.rstrip("/")
        self._token = (bot_token or "").strip()
        self.token_fp = fingerprint(self._token)
        self.recorder = recorder
        self.status = status or GatewayStatus()
        self.proxy_url = proxy_url
        self.intents = intents
        self.max_backoff = max_backoff
        self._bot: Any = None
        self._task: asyncio.Task | None = None
        self._consumer: asyncio.Task | None = None
        self._queue: asyncio.Queue[tuple[str, dict]] = asyncio.Queue()
        self._stopping = False
        self._closing: set[int] = set()

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is not None and not self._task.done():
            return
        self._stopping = False
        self.status.set("starting")
        self._queue = asyncio.Queue()
        self._consumer = asyncio.create_task(self._consume(), name="cdp-listener-recorder")
        self._task = asyncio.create_task(self._run(), name="cdp-listener-gateway")

    async def stop(self) -> None:
        self._stopping = True
        bot = self._bot
        if bot is not None:
            await self._close_bot(bot)
        if self._task is not None:
            if not self._task.done():
                self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        if self._consumer is not None:
            try:  # record what already arrived, then stop
                await asyncio.wait_for(self._queue.join(), 5.0)
            except TimeoutError:
                pass
            self._consumer.cancel()
            try:
                await self._consumer
            except (asyncio.CancelledError, Exception):
                pass
            self._consumer = None
        if not self.status.failed:
            self.status.set("stopped")

    async def wait_ready(self, timeout: float) -> bool:
        """True as soon as the gateway is ready; False on timeout or when it failed for good."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self.status.ready:
                return True
            if self.status.failed or self.status.state == "stopped":
                return False
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await self.status.wait_change(remaining)

    # -- internals ----------------------------------------------------------------------------
    def _make_bot(self) -> Any:
        import hikari
        from hikari.impl import config as hconfig

        kwargs: dict[str, Any] = {
            "banner": None,
            "logs": None,  # never touch the application's logging configuration
            "suppress_optimization_warning": True,
            "intents": hikari.Intents(self.intents),
            "cache_settings": hconfig.CacheSettings(components=hikari.api.CacheComponents.NONE),
            "auto_chunk_members": False,
            "rest_url": self.api_base,
        }
        kwargs.update(hikari_proxy_kwargs(self.proxy_url))  # raises ProxyUnsupported
        bot = hikari.GatewayBot(self._token, **kwargs)
        bot.subscribe(hikari.ShardPayloadEvent, self._on_payload)
        bot.subscribe(hikari.ShardReadyEvent, self._on_ready)
        bot.subscribe(hikari.ShardResumedEvent, self._on_resumed)
        bot.subscribe(hikari.ShardDisconnectedEvent, self._on_disconnected)
        return bot

    async def _on_payload(self, event: Any) -> None:
        # Only enqueue here (synchronously): hikari runs each callback in its own task, the queue
        # keeps Discord's order for the recorder.
        if event.name in ("MESSAGE_CREATE", "MESSAGE_UPDATE"):
            self._queue.put_nowait((event.name, dict(event.payload)))

    async def _on_ready(self, event: Any) -> None:
        self.status.ready_count += 1
        self.status.set("ready", "connected (READY)")
        log.info("gateway ready as the CDP bot [%s] (ready #%d)", self.token_fp, self.status.ready_count)

    async def _on_resumed(self, event: Any) -> None:
        self.status.resumes += 1
        self.status.set("ready", "resumed")
        log.info("gateway session resumed [%s] (resume #%d)", self.token_fp, self.status.resumes)

    async def _on_disconnected(self, event: Any) -> None:
        if not self._stopping and not self.status.failed:
            self.status.set("resuming", "disconnected; reconnecting")

    async def _consume(self) -> None:
        while True:
            name, data = await self._queue.get()
            try:
                if name == "MESSAGE_CREATE":
                    await self.recorder.on_message_create(data)
                else:
                    await self.recorder.on_message_update(data)
            except Exception:
                log.exception("could not record %s for message %s", name, data.get("id"))
            finally:
                self._queue.task_done()

    def _fail(self, detail: str, fix: str, close_code: int | None = None) -> None:
        self.status.set("failed", detail, close_code=close_code, fix=fix)
        log.error("gateway stopped for good [%s]: %s. Fix: %s", self.token_fp, detail, fix)

    async def _close_bot(self, bot: Any) -> None:
        if bot is None:
            return
        if self._bot is bot:
            self._bot = None
        if id(bot) in self._closing:
            return
        self._closing.add(id(bot))
        loop = asyncio.get_running_loop()
        previous = loop.get_exception_handler()

        def quiet(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            # hikari reports a shard that already died of a close code as "shard N raised an
            # exception during shut down" (impl/gateway_bot.py _close_resource): we logged that
            # failure ourselves, once; everything else goes to the previous handler.
            if "during shut down" in str(context.get("message", "")) and self.status.failed:
                log.debug("hikari: %s", context.get("message"))
                return
            if previous is not None:
                previous(lp, context)
            else:
                lp.default_exception_handler(context)

        loop.set_exception_handler(quiet)
        try:
            if bot.is_alive:
                await bot.close()
        except Exception as exc:  # closing a bot whose shard died raises the shard's error again
            log.debug("hikari close: %s", type(exc).__name__)
        finally:
            if loop.get_exception_handler() is quiet:
                loop.set_exception_handler(previous)
            self._closing.discard(id(bot))

    async def _run(self) -> None:
        import hikari

        backoff = 1.0
        while not self._stopping:
            try:
                bot = self._make_bot()
            except ProxyUnsupported as exc:
                self._fail(exc.detail, exc.fix)
                return
            except ValueError:
                self._fail(*MALFORMED_TOKEN)
                return
            self._bot = bot
            reason = ""
            try:
                via = f" through the proxy {proxy_label(self.proxy_url)}" if self.proxy_url else ""
                self.status.set("connecting", f"connecting to the gateway via {self.api_base}{via}")
                await bot.start(check_for_updates=False)
                if self._stopping:
                    return
                backoff = 1.0
                await bot.join()
                reason = "the gateway connection ended"
            except hikari.UnauthorizedError:
                self._fail(*HTTP_401)
                return
            except hikari.GatewayServerClosedConnectionError as exc:
                if exc.code in FATAL_CLOSE_CODES:
                    detail, fix = FATAL_CLOSE_CODES[exc.code]
                    self._fail(detail, fix, close_code=exc.code)
                    return
                reason = f"closed by Discord with code {exc.code}"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = redact(f"{type(exc).__name__}: {exc}", self._token)
                if self.proxy_url and (pw := urlsplit(self.proxy_url).password):
                    reason = reason.replace(pw, "***")  # a proxy error may quote the proxy URL
            finally:
                await self._close_bot(bot)
            if self._stopping:
                return
            delay = min(backoff, self.max_backoff)
            backoff = min(backoff * 2, self.max_backoff)
            self.status.set("connecting", f"{reason}; reconnecting in {delay:.0f}s")
            log.warning("gateway [%s]: %s; reconnecting in %.1fs", self.token_fp, reason, delay)
            await asyncio.sleep(delay)
