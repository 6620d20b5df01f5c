"""Discord interactions endpoint: signature check, PING → PONG, and the `/cdp` slash commands.

Imports stay slim on purpose (stdlib + discord-interactions/nacl): the Lambda handler
(functions/interactions) must answer Discord's PING within 3 seconds even on a cold start, so nothing
here pulls in pydantic, fastapi, hikari or boto3. The heavy parts (settings, service, REST client) are
handed in by the callers, only for commands.

Flow for a command (`/cdp status | cleanup | keepalive`, guild administrators only):
  1. `handle()` verifies the Ed25519 signature (X-Signature-Ed25519 over timestamp + body, against
     DISCORD_PUBLIC_KEY), refuses timestamps more than 5 minutes off, and answers:
     PING → PONG; a command → a deferred, ephemeral response (type 5) plus a `Job`.
  2. The caller runs the job (`complete()`): it calls the operation and PATCHes
     /webhooks/{application_id}/{token}/messages/@original with the result. `cdp serve` does this in
     a background task; the Lambda invokes itself asynchronously. `cdp serve` may answer `status`
     at once instead (`message()`), since it has the facts in memory.
Interaction tokens are secrets for 15 minutes: never logged (DiscordRest hides them).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol


class InteractionType:  # Discord's documented values (discord-interactions has the same enums)
    PING = 1
    APPLICATION_COMMAND = 2


class InteractionResponseType:
    PONG = 1
    CHANNEL_MESSAGE_WITH_SOURCE = 4
    DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE = 5


class InteractionResponseFlags:
    EPHEMERAL = 1 << 6


log = logging.getLogger("cdp.entry.interactions")

# Larger bodies are refused (413) before the signature is checked or anything is parsed; Discord's
# interactions are a few kilobytes.
MAX_BODY_BYTES = 1024 * 1024
MAX_TIMESTAMP_SKEW = 300  # seconds; older (or future) signed requests are refused as replays
EPHEMERAL = InteractionResponseFlags.EPHEMERAL
PERM_ADMINISTRATOR = 1 << 3
PERM_MANAGE_GUILD = 1 << 5
COMMAND = "cdp"
SUBCOMMANDS = {
    "status": "Gateway, accounts, temporary channels, requests in flight, last errors",
    "cleanup": "Delete temporary channels whose time has come",
    "keepalive": "Send the keepalive message to every Coze bot now",
}
# Bulk-overwrite body for PUT /applications/{id}[/guilds/{id}]/commands (`cdp register-commands`).
COMMANDS: list[dict[str, Any]] = [{
    "name": COMMAND,
    "type": 1,  # CHAT_INPUT
    "description": "coze-discord-proxy operator tools",
    "default_member_permissions": str(PERM_MANAGE_GUILD),  # visible to server managers by default
    "contexts": [0],  # guilds only
    "options": [{"type": 1, "name": name, "description": desc} for name, desc in SUBCOMMANDS.items()],
}]

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_SIGNATURE = re.compile(r"^[0-9a-fA-F]{128}$")


class Rejected(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def verify_request(public_key: str, signature: str | None, timestamp: str | None, body: bytes,
                   *, now: float | None = None, max_skew: float = MAX_TIMESTAMP_SKEW) -> None:
    """Raise Rejected (401; 503 when the endpoint is not configured) unless Discord signed this request."""
    public_key = (public_key or "").strip()
    if not public_key:
        raise Rejected(503, "the interactions endpoint is not configured: set DISCORD_PUBLIC_KEY")
    if not _HEX64.match(public_key):
        raise Rejected(503, "DISCORD_PUBLIC_KEY is malformed: 64 hex characters expected")
    if not signature or not timestamp:
        raise Rejected(401, "missing request signature (X-Signature-Ed25519, X-Signature-Timestamp)")
    if not _SIGNATURE.match(signature) or not timestamp.strip().isdigit():
        raise Rejected(401, "invalid request signature")
    # Imported here: PyNaCl ships with the interactions function (its requirements.txt), not in
    # the common layer, and the API only needs it when /interactions is served locally.
    from discord_interactions import verify_key

    with contextlib.redirect_stdout(io.StringIO()):  # verify_key prints the nacl exception
        valid = verify_key(body, signature, timestamp, public_key)
    if not valid:
        raise Rejected(401, "invalid request signature")
    now = time.time() if now is None else now
    if abs(now - int(timestamp)) > max_skew:
        raise Rejected(401, "stale request timestamp (more than 5 minutes off)")


# -- responses ---------------------------------------------------------------------------------------
def message(content: str, *, ephemeral: bool = True) -> dict[str, Any]:
    """CHANNEL_MESSAGE_WITH_SOURCE (type 4)."""
    return {"type": InteractionResponseType.CHANNEL_MESSAGE_WITH_SOURCE,
            "data": {"content": content[:2000], "flags": EPHEMERAL if ephemeral else 0,
                     "allowed_mentions": {"parse": []}}}


def deferred(*, ephemeral: bool = True) -> dict[str, Any]:
    """DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE (type 5): "thinking…", edited later by `complete()`."""
    return {"type": InteractionResponseType.DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE,
            "data": {"flags": EPHEMERAL if ephemeral else 0}}


@dataclass(frozen=True)
class Job:
    """A command to run after the deferred response; `token` edits that response (15 minutes)."""

    command: str
    application_id: str
    token: str
    user_id: str = ""
    guild_id: str = ""

    def to_event(self) -> dict[str, Any]:
        return {"cdp_interaction_job": asdict(self)}

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> Job | None:
        raw = event.get("cdp_interaction_job") if isinstance(event, Mapping) else None
        if not isinstance(raw, Mapping) or raw.get("command") not in SUBCOMMANDS:
            return None
        return cls(**{k: str(raw.get(k) or "") for k in ("command", "application_id", "token", "user_id",
                                                          "guild_id")})

    def __repr__(self) -> str:  # never show the token
        return f"Job(command={self.command!r}, application_id={self.application_id!r})"


@dataclass
class Outcome:
    status: int
    body: dict[str, Any]
    job: Job | None = None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for k, v in headers.items():
        if k.lower() == name:
            return v
    return None


def _object(value: Any) -> Mapping[str, Any]:
    """`value` if it is a JSON object, else {} (a signed body is still any JSON: never trusted to be
    shaped as Discord documents it)."""
    return value if isinstance(value, Mapping) else {}


def subcommand(interaction: Mapping[str, Any]) -> str | None:
    data = _object(interaction.get("data"))
    if data.get("name") != COMMAND:
        return None
    options = data.get("options")
    for opt in options if isinstance(options, list) else []:
        if isinstance(opt, Mapping) and opt.get("type") == 1:
            return str(opt.get("name"))
    return None


def refusal(interaction: Mapping[str, Any], guild_id: str) -> str | None:
    """Why this user may not run /cdp here (None = allowed): guild administrators of GUILD_ID only."""
    gid = str(interaction.get("guild_id") or "")
    if not gid:
        return "Use /cdp inside the server the proxy serves."
    if guild_id and gid != guild_id:
        return "This proxy serves another server (GUILD_ID); /cdp is refused here."
    member = _object(interaction.get("member"))
    try:
        perms = int(member.get("permissions") or 0)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(float("inf"))
        perms = 0
    if not perms & (PERM_ADMINISTRATOR | PERM_MANAGE_GUILD):
        return "Only server managers (Manage Server or Administrator) may use /cdp."
    return None


def handle(body: bytes, headers: Mapping[str, str], *, public_key: str, guild_id: str = "",
           now: float | None = None) -> Outcome:
    """One POST to the interactions endpoint → the HTTP answer (and a Job to run for commands)."""
    if len(body) > MAX_BODY_BYTES:
        return Outcome(413, {"error": f"the body is over {MAX_BODY_BYTES} bytes"})
    try:
        verify_request(public_key, _header(headers, "x-signature-ed25519"),
                       _header(headers, "x-signature-timestamp"), body, now=now)
    except Rejected as exc:
        if exc.status == 401:
            log.warning("interaction refused: %s", exc.message)
        return Outcome(exc.status, {"error": exc.message})
    try:
        interaction = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return Outcome(400, {"error": "the body is not JSON"})
    except RecursionError:
        return Outcome(400, {"error": "the body nests too deeply"})
    if not isinstance(interaction, dict):
        return Outcome(400, {"error": "the body is not a JSON object"})
    itype = interaction.get("type")
    if itype == InteractionType.PING:
        return Outcome(200, {"type": InteractionResponseType.PONG})
    if itype != InteractionType.APPLICATION_COMMAND:
        return Outcome(400, {"error": f"unsupported interaction type {itype!r}"})
    name = subcommand(interaction)
    if name not in SUBCOMMANDS:
        return Outcome(200, message("Unknown command. Try `/cdp status`, `/cdp cleanup` or `/cdp keepalive`."))
    why = refusal(interaction, guild_id)
    if why:
        return Outcome(200, message(why))
    user = _object(_object(interaction.get("member")).get("user")) or _object(interaction.get("user"))
    job = Job(name, str(interaction.get("application_id") or ""), str(interaction.get("token") or ""),
              str(user.get("id") or ""), str(interaction.get("guild_id") or ""))
    log.info("slash command", extra={"command": name, "user_id": job.user_id})
    return Outcome(200, deferred(), job)


# -- running commands ----------------------------------------------------------------------------------
class Operations(Protocol):
    async def status(self) -> dict[str, Any]: ...

    async def cleanup(self) -> dict[str, Any]: ...

    async def keepalive(self) -> dict[str, Any]: ...


async def run(command: str, ops: Operations) -> str:
    """Run one subcommand; the text for Discord (errors included, never raised)."""
    try:
        result = await getattr(ops, command)()
    except Exception as exc:
        log.exception("slash command failed", extra={"command": command})
        return f"❌ `/cdp {command}` failed ({type(exc).__name__}); see the proxy's log."
    return render(command, result)


async def complete(job: Job, ops: Operations, rest, *, not_before: float | None = None) -> str:
    """Run the job and edit the deferred response with its result (DiscordRest.edit_original…).

    `not_before` (time.monotonic()): do not edit earlier, so Discord has the deferred answer first.
    """
    text = await run(job.command, ops)
    if not_before is not None and (wait := not_before - time.monotonic()) > 0:
        import asyncio

        await asyncio.sleep(wait)
    await rest.edit_original_interaction_response(
        job.application_id, job.token, {"content": text[:2000], "allowed_mentions": {"parse": []}})
    return text


async def register_commands(rest, guild_id: str | None) -> list[dict[str, Any]]:
    """PUT the /cdp command: in `guild_id` (instant), or globally when None (may take up to an hour)."""
    app = await rest.get_application()
    return await rest.put_application_commands(str(app["id"]), COMMANDS, guild_id)


# -- rendering -------------------------------------------------------------------------------------------
def _ago(ts: float | None, now: float) -> str:
    if not ts:
        return "never"
    secs = int(max(0, now - ts))
    return f"{secs // 3600}h{secs % 3600 // 60:02d}m ago" if secs >= 3600 else f"{secs // 60}m{secs % 60:02d}s ago"


def render(command: str, result: Mapping[str, Any]) -> str:
    if command == "status":
        return render_status(result)
    if command == "cleanup":
        swept = f", {int(result['swept'])} stray cdp-chat-* channel(s) swept" if result.get("swept") else ""
        return f"🧹 Cleanup done: {int(result.get('deleted', 0))} temporary channel(s) deleted{swept}."
    if command == "keepalive":
        if result.get("skipped"):
            return f"⏸️ Keepalive skipped: {result['skipped']}."
        failed = result.get("failed") or []
        text = f"📨 Keepalive sent to {int(result.get('sent', 0))} Coze bot(s)."
        return text + (f" Failed for: {', '.join(map(str, failed))}." if failed else "")
    return json.dumps(result)[:1900]


def render_status(s: Mapping[str, Any]) -> str:
    now = float(s.get("time") or time.time())
    gw = s.get("gateway") or {}
    lines = [f"**coze-discord-proxy** — {s.get('status', '?')} ({s.get('mode', '?')}, store {s.get('store', '?')})",
             f"Gateway: **{gw.get('state', '?')}**" + (f" — {gw['detail']}" if gw.get("detail") else "")
             + (f" — fix: {gw['fix']}" if gw.get("fix") else "")]
    accounts = s.get("accounts") or []
    by: dict[str, list[str]] = {}
    for a in accounts:
        by.setdefault(str(a.get("health")), []).append(str(a.get("account")))
    lines.append("Accounts: " + (", ".join(f"{h} {len(v)} ({' '.join(v[:5])})" for h, v in by.items()) or "none"))
    bots = s.get("bots") or []
    if bots:
        lines.append("Coze bots: " + ", ".join(f"{b.get('coze_bot_id')} {b.get('health')}" for b in bots[:10]))
    ch = s.get("temporary_channels") or {}
    lines.append(f"Temporary channels alive: {ch.get('count', 0)}")
    lines.append(f"Requests in flight: {s.get('requests_in_flight', 0)}")
    errors = s.get("last_errors") or []
    if errors:
        lines.append("Last errors:")
        for e in errors[-5:]:
            lines.append(f"• {_ago(e.get('at'), now)} {e.get('level')} {str(e.get('message'))[:200]}")
    else:
        lines.append("Last errors: none")
    return "\n".join(lines)[:2000]
