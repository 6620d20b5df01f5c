"""`cdp` command line: serve | listener | cleanup. Each command builds objects and calls into cdp."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from cdp.settings import Settings, SettingsError, load_settings

log = logging.getLogger("cdp")

DEMO_NOTICE = ("DEMO MODE: no Discord settings were given, so answers come from the built-in simulated "
               "Discord guild and Coze bot, not from Coze. Set USER_AUTHORIZATION, BOT_TOKEN, GUILD_ID and "
               "COZE_BOT_ID (environment or .env) to use real Discord.")


def _secrets(settings: Settings) -> list[str]:
    return [*settings.user_tokens, settings.BOT_TOKEN, *settings.api_keys, settings.NOTIFY_TELEGRAM_BOT_TOKEN]


def _start_demo(settings: Settings):
    """Start the simulated Discord in this process and point the settings at it."""
    from cdp.sim import FakeDiscord, SimConfig

    sim = FakeDiscord(SimConfig())
    sim.start()
    cfg = sim.config
    settings = settings.model_copy(update={
        "DISCORD_API_BASE": sim.base_url, "BOT_TOKEN": cfg.bot_token, "GUILD_ID": cfg.guild_id,
        "COZE_BOT_ID": cfg.coze_bot_ids[0], "CHANNEL_ID": cfg.channel_id,
        "USER_AUTHORIZATION": ",".join(cfg.user_tokens), "PROXY_URL": "",
    })
    return sim, settings


async def _serve(settings: Settings, demo_notice: str | None) -> None:
    import uvicorn

    from cdp.api.app import create_app
    from cdp.api.runtime import Runtime
    from cdp.discord.rest import DiscordRest
    from cdp.listener import DiscordListener, GatewayStatus, ReplyRecorder
    from cdp.service import ConversationService
    from cdp.store.memory import MemoryChannelRegistry, MemoryReplyStore

    rest = DiscordRest(api_base=settings.DISCORD_API_BASE, bot_token=settings.BOT_TOKEN,
                       user_agent=settings.USER_AGENT, proxy_url=settings.PROXY_URL or None)
    replies, channels = MemoryReplyStore(), MemoryChannelRegistry()
    service = ConversationService(settings, rest, replies, channels)
    status = GatewayStatus()
    recorder = ReplyRecorder(replies, set(settings.coze_bot_ids), settings.GUILD_ID)
    listener = DiscordListener(api_base=settings.DISCORD_API_BASE, bot_token=settings.BOT_TOKEN,
                               recorder=recorder, status=status, proxy_url=settings.PROXY_URL or None)
    app = create_app(Runtime(settings, service, status, demo_notice))
    server = uvicorn.Server(uvicorn.Config(app, host=settings.HOST, port=settings.PORT, log_config=None,
                                           access_log=False, timeout_graceful_shutdown=5))
    await listener.start()
    janitor = asyncio.create_task(_janitor(service))
    try:
        await server.serve()
    finally:
        janitor.cancel()
        await listener.stop()
        await service.aclose()
        await rest.aclose()


async def _janitor(service, every: float = 1.0) -> None:
    """Deletes temporary channels whose time has come (also those a cancelled request left)."""
    while True:
        try:
            await service.delete_due_channels()
        except Exception:  # a failed sweep must not stop the next one
            log.exception("channel cleanup sweep failed")
        await asyncio.sleep(every)


def cmd_serve(args: argparse.Namespace) -> int:
    from cdp import logs

    overrides = {k: v for k, v in {"HOST": args.host, "PORT": args.port}.items() if v is not None}
    settings = load_settings(**overrides)
    sim = None
    notice = None
    if settings.demo:
        sim, settings = _start_demo(settings)
        notice = DEMO_NOTICE
    logs.configure(settings.LOG_LEVEL, _secrets(settings))
    if notice:
        host = "127.0.0.1" if settings.HOST in ("0.0.0.0", "::") else settings.HOST
        auth = f" -H 'Authorization: Bearer {settings.api_keys[0]}'" if settings.api_keys else ""
        banner = "=" * 78
        print(f"{banner}\n{notice}\nTry it:\n  curl http://{host}:{settings.PORT}/v1/chat/completions "
              f"-H 'Content-Type: application/json'{auth} -d '{{\"model\":\"gpt-4o\",\"messages\":"
              f"[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'\n{banner}", file=sys.stderr, flush=True)
        log.warning(notice)
    log.info("starting", extra={"host": settings.HOST, "port": settings.PORT, "store": settings.CDP_STORE,
                                "discord_api_base": settings.DISCORD_API_BASE})
    try:
        asyncio.run(_serve(settings, notice))
    except KeyboardInterrupt:
        pass
    finally:
        if sim is not None:
            sim.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cdp", description="coze-discord-proxy (serverless Python edition)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="OpenAI API + Discord listener in one process (in-memory store)")
    p.add_argument("--host", default=None, help="overrides HOST")
    p.add_argument("--port", type=int, default=None, help="overrides PORT")
    p.set_defaults(func=cmd_serve)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SettingsError as exc:
        print(f"cdp: refusing to start, {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
