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


async def _serve(settings: Settings, demo_notice: str | None, with_listener: bool) -> None:
    import uvicorn

    from cdp.api.app import create_app
    from cdp.api.runtime import ExternalListener, Runtime
    from cdp.bootstrap import StatusPresence, make_listener, make_rest, make_service, make_stores

    rest = make_rest(settings)
    stores = make_stores(settings)
    # With a shared store (dynamodb) the listener usually runs apart (`cdp listener`, ECS).
    listener = make_listener(settings, stores.replies) if with_listener else None
    service = make_service(settings, stores, rest, StatusPresence(listener.status) if listener else None)
    status = listener.status if listener else ExternalListener()
    app = create_app(Runtime(settings, service, status, demo_notice))
    server = uvicorn.Server(uvicorn.Config(app, host=settings.HOST, port=settings.PORT, log_config=None,
                                           access_log=False, timeout_graceful_shutdown=5))
    if listener:
        await listener.start()
    janitor = asyncio.create_task(_janitor(service))
    try:
        await server.serve()
    finally:
        janitor.cancel()
        if listener:
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
        asyncio.run(_serve(settings, notice, with_listener=not args.no_listener))
    except KeyboardInterrupt:
        pass
    finally:
        if sim is not None:
            sim.stop()
    return 0


def cmd_listener(args: argparse.Namespace) -> int:
    from cdp import logs

    settings = load_settings()
    if settings.demo:
        print("cdp listener: needs BOT_TOKEN, GUILD_ID, COZE_BOT_ID (and USER_AUTHORIZATION); there is "
              "no demo listener", file=sys.stderr)
        return 2
    logs.configure(settings.LOG_LEVEL, _secrets(settings))
    from cdp.listener_main import run_listener

    return asyncio.run(run_listener(settings, health_port=args.health_port))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cdp", description="coze-discord-proxy (serverless Python edition)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="OpenAI API + Discord listener in one process (in-memory store)")
    p.add_argument("--host", default=None, help="overrides HOST")
    p.add_argument("--port", type=int, default=None, help="overrides PORT")
    p.add_argument("--no-listener", action="store_true",
                   help="do not connect to the gateway here (the listener runs as `cdp listener`)")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("listener", help="only the Discord gateway listener, writing replies to the store")
    p.add_argument("--health-port", type=int, default=None,
                   help="serve GET /healthz on this port (container health check)")
    p.set_defaults(func=cmd_listener)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SettingsError as exc:
        print(f"cdp: refusing to start, {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
