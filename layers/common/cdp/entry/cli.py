"""`cdp` command line: serve | listener | cleanup. Each command builds objects and calls into cdp."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from cdp.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from cdp.domain.routing import Router

log = logging.getLogger("cdp")

# Seconds the requests uvicorn's drain cut (timeout_graceful_shutdown) get to run their own ending.
CUT_REQUESTS_WAIT = 3.0

DEMO_NOTICE = ("DEMO MODE: no Discord settings were given, so answers come from the built-in simulated "
               "Discord guild and Coze bot, not from Coze. Set USER_AUTHORIZATION, BOT_TOKEN, GUILD_ID and "
               "COZE_BOT_ID (environment or .env) to use real Discord.")


def open_api_refusal(settings: Settings) -> str:
    """Why `cdp serve` will not start an API open to the network (PROXY_SECRET empty, HOST not loopback)."""
    return (f"cdp serve: refusing to start an open API: PROXY_SECRET is empty and HOST={settings.HOST} listens "
            f"beyond this machine, so anyone who reaches port {settings.PORT} could post through your Discord "
            "user accounts. Set PROXY_SECRET to one or more keys (comma-separated; clients send one as "
            "'Authorization: Bearer <key>'), or HOST=127.0.0.1 to listen on this machine only, or "
            "ALLOW_OPEN_API=1 to run an open API on purpose.")


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


async def _serve(settings: Settings, router: Router, demo_notice: str | None, with_listener: bool,
                 signals: _ShutdownSignals | None = None) -> None:
    import uvicorn

    from cdp.entry.api.app import create_app
    from cdp.entry.api.runtime import ExternalListener, Runtime
    from cdp.entry.bootstrap import StatusPresence, make_listener, make_rest, make_service, make_stores

    rest = make_rest(settings)
    stores = make_stores(settings)
    # With a shared store (dynamodb) the listener usually runs apart (`cdp listener`, ECS).
    listener = make_listener(settings, stores.replies, router.bot_ids()) if with_listener else None
    service = make_service(settings, stores, rest, StatusPresence(listener.status) if listener else None,
                           router)
    status = listener.status if listener else ExternalListener()
    runtime = Runtime(settings, service, status, demo_notice, stores=stores)
    app = create_app(runtime)  # sets runtime.metrics (Prometheus, /metrics)
    if listener:
        listener.recorder.metrics = runtime.metrics
    server = uvicorn.Server(uvicorn.Config(app, host=settings.HOST, port=settings.PORT, log_config=None,
                                           access_log=False, timeout_graceful_shutdown=5,
                                           # the client IP is TRUST_PROXY_HEADERS' call (cdp.entry.api.limits)
                                           proxy_headers=False))
    if signals is not None:
        signals.server = server
    recovery = None
    if listener:
        listener.holds_for_recovery = True  # recover_after_new_sessions below runs the recoveries
        await listener.start()
        from cdp.entry.listener import recover_after_new_sessions

        configured = [settings.CHANNEL_ID, *(e.channel_id for e in router.entries if e.channel_id)]
        recovery = asyncio.create_task(recover_after_new_sessions(listener, rest, stores.channels, configured,
                                                                  settings.GUILD_ID))
    from cdp.app.jobs import schedule_jobs
    from cdp.app.scheduler import Scheduler

    scheduler = Scheduler()  # channel cleanup + stray sweep, daily keepalive
    schedule_jobs(scheduler, settings, stores, rest, service)
    scheduler.start()
    try:
        await server.serve()
    finally:
        try:
            # uvicorn cancels the requests its drain cut, then returns at once: let them end (release
            # their account lease, hand their channel back) before the service closes under them.
            cut = [t for t in server.server_state.tasks if not t.done()]
            if cut:
                await asyncio.wait(cut, timeout=CUT_REQUESTS_WAIT)
            if recovery is not None:
                recovery.cancel()
            await scheduler.stop()
            if listener:
                await listener.stop()
        finally:  # due channel deletions done, later ones left registered (bounded wait)
            try:
                await service.aclose()
            finally:
                await rest.aclose()


class _ShutdownSignals:
    """uvicorn drains on SIGTERM/SIGINT, then raises the signal again: with the default handler the
    process dies right there, skipping `_serve`'s shutdown (listener, pending channel deletions). This
    handler takes that one replay (the server is already exiting), so the shutdown runs (bounded:
    ChannelKeeper.aclose). Any other signal (before uvicorn took over, or the operator's second one
    during the shutdown) acts as before: the process ends at once."""

    def __init__(self) -> None:
        self.server: object | None = None  # the uvicorn.Server, once made
        self.replayed = False
        self._previous: dict[int, object] = {}

    def _handler(self, signum: int, frame: object) -> None:
        if not self.replayed and getattr(self.server, "should_exit", False):
            self.replayed = True
            return
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)  # SIGINT: KeyboardInterrupt
            return
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)

    @contextmanager
    def installed(self) -> Iterator[_ShutdownSignals]:
        self._previous = {sig: signal.signal(sig, self._handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, old in self._previous.items():
                signal.signal(sig, old)  # type: ignore[arg-type]


def fast_loop_factory():
    """uvloop's event loop when installed (uvicorn[standard] brings it; uvicorn's own CLI picks it
    too), else None (asyncio's): sockets, timers and callbacks cost about half as much CPU per SSE
    frame and gateway event."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def cmd_serve(args: argparse.Namespace) -> int:
    from cdp.entry import logs
    overrides = {k: v for k, v in {"HOST": args.host, "PORT": args.port}.items() if v is not None}
    settings = load_settings(**overrides)
    if settings.open_api and not settings.demo and not settings.ALLOW_OPEN_API:
        print(open_api_refusal(settings), file=sys.stderr, flush=True)
        return 2
    from cdp.entry.bootstrap import make_router

    router = make_router(settings)  # bot_config.json read once, validated before anything starts
    sim = None
    notice = None
    if settings.demo:
        sim, settings = _start_demo(settings)
        router = make_router(settings, router.entries)  # the sim's COZE_BOT_ID
        notice = DEMO_NOTICE
    logs.configure(settings.LOG_LEVEL, settings.secrets())
    if notice:
        host = "127.0.0.1" if settings.HOST in ("0.0.0.0", "::") else settings.HOST
        # never a key in the banner: it goes to terminals, scroll-back and container logs
        auth = " -H 'Authorization: Bearer <a PROXY_SECRET key>'" if settings.api_keys else ""
        banner = "=" * 78
        print(f"{banner}\n{notice}\nTry it:\n  curl http://{host}:{settings.PORT}/v1/chat/completions "
              f"-H 'Content-Type: application/json'{auth} -d '{{\"model\":\"gpt-4o\",\"messages\":"
              f"[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'\n{banner}", file=sys.stderr, flush=True)
        log.warning(notice)
    if settings.open_api and not settings.demo:
        log.warning("open API: PROXY_SECRET is empty and HOST listens beyond this machine (ALLOW_OPEN_API=1); "
                    "anyone who reaches the port may chat", extra={"host": settings.HOST})
    log.info("starting", extra={"host": settings.HOST, "port": settings.PORT, "store": settings.CDP_STORE,
                                "discord_api_base": settings.DISCORD_API_BASE})
    try:
        with _ShutdownSignals().installed() as signals:
            asyncio.run(_serve(settings, router, notice, with_listener=not args.no_listener, signals=signals),
                        loop_factory=fast_loop_factory())
    except KeyboardInterrupt:
        pass
    finally:
        if sim is not None:
            sim.stop()
    return 0


def cmd_listener(args: argparse.Namespace) -> int:
    from cdp.entry import logs
    from cdp.settings import LISTENER_REQUIRED

    settings = load_settings(required=LISTENER_REQUIRED)  # no user token: the ECS task is not given one
    if settings.demo:
        print("cdp listener: needs BOT_TOKEN, GUILD_ID, COZE_BOT_ID; there is "
              "no demo listener", file=sys.stderr)
        return 2
    logs.configure(settings.LOG_LEVEL, settings.secrets())
    from cdp.entry.listener import run_listener

    return asyncio.run(run_listener(settings, health_port=args.health_port, metrics_interval=args.metrics_interval),
                       loop_factory=fast_loop_factory())


def cmd_job(args: argparse.Namespace) -> int:
    """`cdp cleanup` / `cdp keepalive`: run the job once against the configured Discord, print the result."""
    import json

    from cdp.entry import logs
    settings = load_settings()
    if settings.demo:
        print(f"cdp {args.command}: needs the Discord settings (USER_AUTHORIZATION, BOT_TOKEN, GUILD_ID, "
              "COZE_BOT_ID)", file=sys.stderr)
        return 2
    logs.configure(settings.LOG_LEVEL, settings.secrets())
    result = asyncio.run(_run_job(settings, args))
    print(json.dumps(result, ensure_ascii=False))
    return 1 if result.get("failed") else 0


async def _run_job(settings: Settings, args: argparse.Namespace) -> dict:
    from cdp.app import jobs
    from cdp.entry.bootstrap import make_rest, make_service, make_stores

    rest = make_rest(settings)
    stores = make_stores(settings)
    service = make_service(settings, stores, rest)
    try:
        if args.command == "cleanup":
            return await jobs.cleanup(settings, stores, rest, service, sweep=not args.no_sweep)
        return await jobs.keepalive(settings, stores, rest, service, force=args.force)
    finally:
        await service.aclose()
        await rest.aclose()


def cmd_doctor(args: argparse.Namespace) -> int:
    """Every setting checked against Discord and the store: one line each, exit 1 on any problem."""
    from cdp.entry import doctor
    if not args.verbose:
        logging.getLogger("cdp").setLevel(logging.CRITICAL)  # the check lines say it all
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(doctor.render(doctor.settings_problems(exc.problems)))
        return 1
    from cdp.entry.bootstrap import make_rest

    async def run() -> list:
        rest = make_rest(settings)
        try:
            return await doctor.run_checks(settings, rest)
        finally:
            await rest.aclose()

    checks = asyncio.run(run())
    print(doctor.render(checks))
    return 1 if any(c.problem for c in checks) else 0


def cmd_register_commands(args: argparse.Namespace) -> int:
    """PUT the /cdp slash command (status, cleanup, keepalive) in GUILD_ID, or globally."""
    from cdp.domain.discord import DiscordError
    from cdp.entry import interactions
    from cdp.entry.bootstrap import make_rest

    settings = load_settings()
    if settings.demo:
        print("cdp register-commands: needs BOT_TOKEN and GUILD_ID (run `cdp doctor`)", file=sys.stderr)
        return 2

    async def run() -> list:
        rest = make_rest(settings)
        try:
            return await interactions.register_commands(rest, None if args.global_ else settings.GUILD_ID)
        finally:
            await rest.aclose()

    try:
        commands = asyncio.run(run())
    except DiscordError as exc:
        print(f"cdp register-commands: Discord refused ({exc.status}, code {exc.code}): {exc.message}",
              file=sys.stderr)
        return 1
    where = "globally (may take up to an hour to appear)" if args.global_ else f"in server {settings.GUILD_ID}"
    subs = ", ".join(o["name"] for c in commands for o in c.get("options") or [])
    print(f"registered /{', /'.join(c['name'] for c in commands)} ({subs}) {where}")
    print("Discord sends them to the Interactions Endpoint URL of the application (Developer Portal → General "
          "Information): <your API URL>/interactions, with DISCORD_PUBLIC_KEY set to its Public Key.")
    return 0


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
    p.add_argument("--health-port", type=int,
                   default=int(os.environ["CDP_HEALTH_PORT"]) if os.environ.get("CDP_HEALTH_PORT") else None,
                   help="serve GET /healthz on this port (container health check; env CDP_HEALTH_PORT)")
    on_ecs = os.environ.get("AWS_EXECUTION_ENV", "").startswith("AWS_ECS")
    p.add_argument("--metrics-interval", type=float, default=60.0 if on_ecs else 0.0,
                   help="write the listener's metrics as CloudWatch EMF lines every this many seconds "
                        "(default: 60 on ECS, where AWS_EXECUTION_ENV says so; 0 = off)")
    p.set_defaults(func=cmd_listener)
    p = sub.add_parser("cleanup", help="delete due temporary channels and stray cdp-chat-* channels once")
    p.add_argument("--no-sweep", action="store_true",
                   help="only registered channels whose time has come (no scan of the guild)")
    p.set_defaults(func=cmd_job)
    p = sub.add_parser("keepalive", help="send the daily keepalive message to every configured Coze bot once")
    p.add_argument("--force", action="store_true", help="even if COZE_BOT_STAY_ACTIVE_ENABLE=0")
    p.set_defaults(func=cmd_job)
    p = sub.add_parser("doctor", help="check every setting against Discord and the store (run this first)")
    p.add_argument("--verbose", action="store_true", help="also show the log lines of the Discord calls")
    p.set_defaults(func=cmd_doctor)
    p = sub.add_parser("register-commands", help="register the /cdp slash command (status, cleanup, keepalive)")
    p.add_argument("--global", dest="global_", action="store_true",
                   help="register globally instead of in GUILD_ID")
    p.set_defaults(func=cmd_register_commands)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SettingsError as exc:
        print(f"cdp: refusing to start, {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
