"""The CDP bot's gateway session: a hikari GatewayBot kept connected (heartbeats, zombie detection,
RESUME, op 7 / op 9 and zlib-stream are hikari's), its raw message payloads fed in arrival order to
the ReplyRecorder. A fatal close code (4004, 4010 to 4014) or a 401 on GET /gateway/bot stops it for
good: status "failed" with the exact fix, logged once at ERROR.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any
from urllib.parse import urlsplit

from cdp.adapters.discord.proxy import ProxyUnsupported, hikari_proxy_kwargs, proxy_label
from cdp.adapters.discord.recorder import ReplyRecorder
from cdp.domain.secrets import fingerprint, redact

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

MAX_RECORDING = 64  # events recorded at once (their store writes overlap; see DiscordListener._consume)
# With `holds_for_recovery`, how long at most the events of a fresh session wait for the REST recovery
# of its gap (seconds): recovery under a 429 storm takes seconds; a stuck one must not stop recording.
RECOVERY_HOLD_MAX = 30.0
UNHEALTHY_AFTER = 5  # consecutive failed store writes after which the listener reports itself unhealthy
STATES = ("starting", "connecting", "ready", "resuming", "failed", "stopped")


class GatewayStatus:
    """What the listener is doing, for health checks and `cdp doctor`."""

    def __init__(self) -> None:
        self.state = "starting"
        self.detail = ""
        self.close_code: int | None = None
        self.fix: str | None = None
        self.since = time.time()
        self.ready_count = 0
        self.recovered_count = 0  # fresh sessions (READY) whose gap has been recovered through REST
        self.recovered_at = 0.0
        self.resumes = 0
        self.store_failures = 0  # consecutive failed store writes (0 after any success)
        self.store_error = ""  # the last failure, while the count is not 0
        self._waiters: set[asyncio.Future[None]] = set()

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def recording(self) -> bool:
        """Ready, and what a fresh session missed (never replayed) has been re-read through REST: only
        then does the store hold every message of the replies in progress."""
        return self.ready and self.recovered_count >= self.ready_count

    @property
    def recording_since(self) -> float:
        return max(self.since, self.recovered_at)

    def recovered(self, ready_count: int) -> None:
        """The recovery after READY number `ready_count` is over (done, or given up): wake waiters."""
        if ready_count > self.recovered_count:
            self.recovered_count = ready_count
            self.recovered_at = time.time()
            self._wake()

    @property
    def failed(self) -> bool:
        return self.state == "failed"

    @property
    def store_healthy(self) -> bool:
        return self.store_failures < UNHEALTHY_AFTER

    @property
    def healthy(self) -> bool:
        """Ready and recording: what /healthz reports. Edits that cannot be written are retried
        (never dropped), but a listener whose writes keep failing says so instead of looking fine."""
        return self.ready and self.store_healthy

    def store_write_failed(self, error: str) -> None:
        self.store_failures += 1
        self.store_error = error
        if self.store_failures == UNHEALTHY_AFTER:
            log.error("%d store writes failed in a row: unhealthy until one succeeds (%s)",
                      self.store_failures, error)

    def store_write_succeeded(self) -> None:
        if self.store_failures >= UNHEALTHY_AFTER:
            log.warning("store writes succeed again after %d failures: healthy", self.store_failures)
        self.store_failures = 0
        self.store_error = ""

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
        self._wake()

    def _wake(self) -> None:
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
            "recording": self.recording,
            "resumes": self.resumes,
            "store": {"healthy": self.store_healthy, "consecutive_failures": self.store_failures,
                      "last_error": self.store_error},
        }

    def __repr__(self) -> str:
        return f"GatewayStatus({self.to_dict()!r})"


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
        if recorder.health is None:  # its store writes' outcomes make the listener (un)healthy
            recorder.health = self.status
        self.proxy_url = proxy_url
        self.intents = intents
        self.max_backoff = max_backoff
        self._bot: Any = None
        self._task: asyncio.Task | None = None
        self._consumer: asyncio.Task | None = None
        self._queue: asyncio.Queue[tuple[str, dict]] = asyncio.Queue()
        self._recording: set[asyncio.Task] = set()  # events being recorded (store writes in flight)
        # Set by the entry points that run a REST recovery after each fresh READY (cdp serve, cdp
        # listener): the new session's events wait for it, so the store gets a reply's earlier messages
        # (sent in the gap) before its later ones; else a last message with Coze's buttons could end
        # the reply on the answering side with the first messages missing.
        self.holds_for_recovery = False
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
            await _cancel(self._task)
            self._task = None
        if self._consumer is not None:
            with contextlib.suppress(TimeoutError):  # record what already arrived, then stop
                await asyncio.wait_for(self._queue.join(), 5.0)
            await _cancel(self._consumer)
            self._consumer = None
            for task in list(self._recording):
                await _cancel(task)
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

    async def _wait_recovered(self) -> None:
        """Until the recovery of the current session's gap is over (bounded by RECOVERY_HOLD_MAX)."""
        status = self.status
        if status.recovered_count >= status.ready_count:
            return
        deadline = asyncio.get_running_loop().time() + RECOVERY_HOLD_MAX
        while status.recovered_count < status.ready_count and not self._stopping:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                log.warning("recording resumed before the recovery of the gateway gap finished",
                            extra={"ready_count": status.ready_count})
                return
            await status.wait_change(remaining)

    async def _consume(self) -> None:
        """Record events in arrival order, up to MAX_RECORDING at once: each event starts as an
        eager task, so the recorder merges it before the next one is taken (its lock is FIFO), and
        only the store writes overlap. A slow store (DynamoDB: ~5-10 ms a write) must not queue
        every other reply's edits behind one write; writes of one message stay ordered by version.
        A write that fails is retried by the recorder until it succeeds or is superseded, holding its
        slot: while the store is down the slots fill and the events wait here, in order, for it."""
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(MAX_RECORDING)
        while True:
            name, data = await self._queue.get()
            if self.holds_for_recovery:
                await self._wait_recovered()
            await slots.acquire()
            task = asyncio.eager_task_factory(loop, self._record(name, data, slots))
            if not task.done():
                self._recording.add(task)
                task.add_done_callback(self._recording.discard)

    async def _record(self, name: str, data: dict, slots: asyncio.Semaphore) -> None:
        try:
            if name == "MESSAGE_CREATE":
                await self.recorder.on_message_create(data)
            else:
                await self.recorder.on_message_update(data)
        except Exception:
            log.exception("could not record %s for message %s", name, data.get("id"))
        finally:
            slots.release()
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


async def _cancel(task: asyncio.Task) -> None:
    """Cancel `task` (if still running) and wait for it; its outcome no longer matters."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
