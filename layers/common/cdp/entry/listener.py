"""`cdp listener` / the ECS service: the Discord gateway listener as its own process.

- serves GET /healthz on `health_port` (200 when the gateway is READY and store writes succeed, else
  503 + status JSON; 5 failed store writes in a row make it 503 until one succeeds: the edits are
  retried meanwhile, never dropped)
- SIGTERM / SIGINT: stop gracefully (the listener records what already arrived, then closes)
- exits 3 when the gateway failed for good (bad BOT_TOKEN, missing intents...): a restart cannot fix it
- after every fresh READY (start, or a session that could not be resumed) recovers the replies that
  arrived while nobody listened: it reads the recent messages of the temporary channels in use, of
  CHANNEL_ID and of the bot_config.json channels, and feeds every Coze bot's replies to the recorder
  (writes are versioned, so feeding one twice is harmless)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from cdp.domain.metrics import gateway_gauges

if TYPE_CHECKING:
    from cdp.adapters.discord.recorder import ReplyRecorder
    from cdp.adapters.discord.rest import DiscordRest
    from cdp.ports import ChannelRegistry
    from cdp.settings import Settings

log = logging.getLogger("cdp.entry.listener")

EXIT_OK = 0
EXIT_FAILED = 3  # fatal gateway error (token, intents): fix the configuration, do not just restart
RECOVER_LIMIT = 50


async def _health_server(port: int, status: Any, host: str = "0.0.0.0") -> asyncio.AbstractServer:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while True:  # drain headers
                line = await asyncio.wait_for(reader.readline(), 5)
                if line in (b"\r\n", b"\n", b""):
                    break
            parts = request.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else "/"
            if path.split("?")[0] not in ("/healthz", "/"):
                code, body = 404, {"error": "not found"}
            else:
                ready = bool(getattr(status, "healthy", status.ready))
                code, body = (200 if ready else 503), {"status": "ok" if ready else "unavailable",
                                                       "gateway": status.to_dict()}
            data = json.dumps(body, default=str).encode()
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[code]
            writer.write(f"HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    return await asyncio.start_server(handle, host, port)


async def channels_to_recover(registry: ChannelRegistry, configured: Iterable[str],
                              now: float | None = None) -> list[str]:
    """Channels that may hold replies nobody recorded: the temporary ones still in use or not yet
    due for deletion (a sticky conversation's channel always has a deletion time, pushed back at
    every turn) and the configured ones (CHANNEL_ID, bot_config.json channelIds)."""
    now = time.time() if now is None else now
    ids: list[str] = []
    with contextlib.suppress(Exception):
        ids = [c.channel_id for c in await registry.all() if c.delete_at is None or c.delete_at > now]
    return list(dict.fromkeys([*ids, *(c for c in configured if c)]))


async def recover(recorder: ReplyRecorder, rest: DiscordRest, registry: ChannelRegistry,
                  configured: Iterable[str], guild_id: str, limit: int = RECOVER_LIMIT) -> int:
    """Feed the replies of every Coze bot the recorder knows, among the recent messages of the
    channels to recover, to the recorder."""
    fed = 0
    for channel_id in await channels_to_recover(registry, configured):
        try:
            messages = await rest.get_messages(channel_id, limit=limit)
        except Exception as exc:  # noqa: BLE001 - deleted channel, missing access...: skip it
            log.info("recovery skipped a channel", extra={"channel_id": channel_id, "error": type(exc).__name__})
            continue
        for raw in sorted(messages or [], key=lambda m: int(m.get("id", 0))):  # oldest first
            if str((raw.get("author") or {}).get("id")) not in recorder.coze_bot_ids:
                continue
            if not (raw.get("message_reference") or raw.get("referenced_message")):
                continue
            raw.setdefault("guild_id", guild_id)
            try:
                await recorder.on_message_create(raw)
                fed += 1
            except Exception:
                log.exception("recovery could not record a message", extra={"message_id": raw.get("id")})
    if fed:
        log.info("recovered replies that arrived while the listener was down", extra={"messages": fed})
    return fed


async def _recover_then_mark(listener: Any, rest: DiscordRest, registry: ChannelRegistry,
                             configured: Iterable[str], guild_id: str, ready_count: int) -> None:
    """`recover`, then mark that session's gap recovered (also when recovery failed: replies are then
    only as complete as the gateway made them, which the log says)."""
    try:
        await recover(listener.recorder, rest, registry, configured, guild_id)
    except Exception:
        log.exception("recovery after a new gateway session failed")
    finally:
        listener.status.recovered(ready_count)


async def recover_after_new_sessions(listener: Any, rest: DiscordRest, registry: ChannelRegistry,
                                     configured: Iterable[str], guild_id: str) -> None:
    """`cdp serve`'s in-process listener: after each fresh READY (a session that could not be resumed:
    op 9 false, a close code that forbids RESUME), the same recovery as `cdp listener`'s, since the
    events of the gap are never replayed. Runs until cancelled."""
    status = listener.status
    recovered_for = 0
    configured = list(configured)
    while True:
        if status.ready and status.ready_count > recovered_for:
            recovered_for = status.ready_count
            await _recover_then_mark(listener, rest, registry, configured, guild_id, recovered_for)
        await status.wait_change(5.0)


async def _publish_presence(presence: Any, status: Any, ready: bool | None = None) -> None:
    """Tell the answering side whether replies are being recorded (it won't call a silent reply done
    while no listener is connected). A failed write is logged, never fatal."""
    if presence is None:
        return
    try:  # "ready" for the answering side: connected, and the gap of a fresh session recovered
        await presence.publish(status.recording if ready is None else ready, status.recording_since)
    except Exception:
        log.warning("could not publish the listener's presence", exc_info=True)


async def _write_metrics(metrics: Any, status: Any, interval: float) -> None:
    """Every `interval` s: the gateway's gauges (state, resumes, store health) joined to the counters
    the recorder gathered, written as EMF lines (CloudWatch reads them from the task's log)."""
    while True:
        await asyncio.sleep(interval)
        _flush_metrics(metrics, status)


def _flush_metrics(metrics: Any, status: Any) -> None:
    try:
        for name, value, labels in gateway_gauges(status.to_dict()):
            metrics.set(name, value, **labels)
        metrics.flush()
    except Exception:  # metrics never stop the listener
        log.warning("listener metrics not written", exc_info=True)


async def run_listener(settings: Settings, health_port: int | None, *, stop: asyncio.Event | None = None,
                       install_signals: bool = True, metrics_interval: float = 0.0) -> int:
    """Run until SIGTERM/SIGINT (or `stop` is set): 0; or until the gateway fails for good: 3.
    `metrics_interval` > 0: the listener's metrics as CloudWatch EMF lines that often (on ECS)."""
    from cdp.entry.bootstrap import make_listener, make_rest, make_router, make_stores

    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    stores = make_stores(settings)
    router = make_router(settings)
    listener = make_listener(settings, stores.replies, router.bot_ids())
    configured = [settings.CHANNEL_ID, *(e.channel_id for e in router.entries if e.channel_id)]
    rest = make_rest(settings)
    status = listener.status
    installed: list[int] = []
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread / Windows
                pass
    server = await _health_server(health_port, status) if health_port is not None else None
    metrics_task: asyncio.Task | None = None
    if metrics_interval > 0:
        from cdp.adapters.metrics_emf import EmfMetrics

        listener.recorder.metrics = EmfMetrics()
        metrics_task = asyncio.create_task(_write_metrics(listener.recorder.metrics, status, metrics_interval))
    recoveries: set[asyncio.Task] = set()
    rc = EXIT_OK
    try:
        listener.holds_for_recovery = True  # this loop runs a recovery after each fresh READY
        await listener.start()
        log.info("listener started", extra={"store": settings.CDP_STORE, "health_port": health_port})
        recovered_for = 0
        presence = getattr(stores, "presence", None)
        while not stop.is_set():
            await _publish_presence(presence, status)
            if status.failed:
                log.error("listener failed for good; exiting. Fix the configuration (BOT_TOKEN secret, "
                          "Developer Portal intents), then restart the service.",
                          extra={"gateway": status.to_dict()})
                rc = EXIT_FAILED
                break
            if status.ready and status.ready_count > recovered_for:
                recovered_for = status.ready_count
                task = asyncio.create_task(_recover_then_mark(listener, rest, stores.channels, configured,
                                                              settings.GUILD_ID, recovered_for))
                recoveries.add(task)
                task.add_done_callback(recoveries.discard)
            waiter = asyncio.create_task(stop.wait())
            changed = asyncio.create_task(status.wait_change(5.0))
            try:
                await asyncio.wait({waiter, changed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                changed.cancel()
    finally:
        log.info("listener stopping")
        await _publish_presence(getattr(stores, "presence", None), status, ready=False)
        for task in list(recoveries):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
        await listener.stop()  # records what already arrived (in-flight store writes), then closes
        if metrics_task is not None:
            metrics_task.cancel()
            _flush_metrics(listener.recorder.metrics, status)  # the last interval's counts
        with contextlib.suppress(Exception):
            await rest.aclose()
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()
        for sig in installed:
            loop.remove_signal_handler(sig)
    return rc
