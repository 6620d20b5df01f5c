"""`cdp doctor`: every setup mistake the original's users hit, found before the first request.

Each check asks Discord (through DiscordRest) or the store and yields one `Check`: ok, problem (with
the exact fix), warn (works, but weaker than it should be; not a failure) or skip (a check that cannot run because an earlier one failed, or does not apply).
`run_checks` runs them all; `render` prints one line each. Tokens only ever appear as fingerprints.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cdp.domain.discord import (
    PERM_ADMINISTRATOR,
    PERM_MANAGE_CHANNELS,
    PERM_MANAGE_ROLES,
    PERM_READ_MESSAGE_HISTORY,
    PERM_SEND_MESSAGES,
    PERM_VIEW_CHANNEL,
    PRIVATE_MEMBER_ALLOW,
    DiscordError,
    DiscordForbidden,
    DiscordNotFound,
    DiscordUnauthorized,
    DiscordVerificationRequired,
)
from cdp.domain.secrets import fingerprint
from cdp.ports import DiscordRestPort
from cdp.settings import Settings

log = logging.getLogger("cdp.entry.doctor")

OK, PROBLEM, SKIP, WARN = "ok", "problem", "skip", "warn"
FLAG_MESSAGE_CONTENT = 1 << 18  # GATEWAY_MESSAGE_CONTENT (verified bots)
FLAG_MESSAGE_CONTENT_LIMITED = 1 << 19  # GATEWAY_MESSAGE_CONTENT_LIMITED (the portal toggle, < 100 servers)
ALL_PERMISSIONS = (1 << 53) - 1
# VIEW_CHANNEL | SEND_MESSAGES | READ_MESSAGE_HISTORY | MANAGE_CHANNELS | MANAGE_ROLES: what the invite
# link asks for (Manage Roles: private temporary channels, TEMP_CHANNEL_PRIVATE)
INVITE_PERMISSIONS = PRIVATE_MEMBER_ALLOW | PERM_MANAGE_CHANNELS | PERM_MANAGE_ROLES
GUILD_CHANNEL_LIMIT = 500
CHANNELS_LEFT_WARNING = 20
TEXT_CHANNEL_TYPES = {0: "text", 5: "announcement"}
CHANNEL_TYPE_NAMES = {0: "text", 2: "voice", 4: "category", 5: "announcement", 13: "stage", 15: "forum",
                      16: "media", 10: "thread", 11: "thread", 12: "thread"}
PORTAL = "https://discord.com/developers/applications"


@dataclass(frozen=True)
class Check:
    name: str
    state: str  # ok | problem | warn | skip
    detail: str
    fix: str = ""

    @property
    def problem(self) -> bool:
        return self.state == PROBLEM

    def line(self) -> str:
        label = {OK: "ok     ", PROBLEM: "PROBLEM", WARN: "warn   ", SKIP: "skip   "}[self.state]
        text = f"{label} {self.name}: {self.detail}"
        return f"{text} — fix: {self.fix}" if self.fix else text


def render(checks: Iterable[Check]) -> str:
    checks = list(checks)
    problems = sum(c.problem for c in checks)
    oks = sum(c.state == OK for c in checks)
    skipped = sum(c.state == SKIP for c in checks)
    warned = sum(c.state == WARN for c in checks)
    summary = (f"cdp doctor: {oks} ok, {problems} problem(s), "
               + (f"{warned} warning(s), " if warned else "") + f"{skipped} skipped"
               + (" — fix the problems above, then run `cdp doctor` again" if problems else " — ready"))
    return "\n".join([*(c.line() for c in checks), summary])


def invite_url(application_id: str | None) -> str:
    cid = application_id or "<APPLICATION_ID>"
    return (f"https://discord.com/oauth2/authorize?client_id={cid}&scope=bot+applications.commands"
            f"&permissions={INVITE_PERMISSIONS}")


def permissions_of(member: dict, guild: dict) -> int:
    """Guild-level permissions of a member: @everyone's role | its roles; everything for the owner or
    an administrator (channel overwrites aside)."""
    if guild.get("owner_id") and (member.get("user") or {}).get("id") == guild.get("owner_id"):
        return ALL_PERMISSIONS
    roles = {str(r["id"]): int(r.get("permissions") or 0) for r in guild.get("roles") or []}
    perms = roles.get(str(guild.get("id")), 0)
    for rid in member.get("roles") or []:
        perms |= roles.get(str(rid), 0)
    return ALL_PERMISSIONS if perms & PERM_ADMINISTRATOR else perms


class Doctor:
    """The checks, sharing what they learned (the bot, its application, the guild)."""

    def __init__(self, settings: Settings, rest: DiscordRestPort, *, cwd=None) -> None:
        self.s = settings
        self.rest = rest
        self.cwd = cwd
        self.bot: dict | None = None
        self.app: dict | None = None
        self.guild: dict | None = None
        self.bot_entries: list = []
        self.bot_perms: int | None = None  # the bot's guild-level permissions (manage_channels)

    @property
    def app_id(self) -> str | None:
        return str(self.app["id"]) if self.app else (str(self.bot["id"]) if self.bot else None)

    async def run(self) -> list[Check]:
        checks: list[Check] = self.api_keys()
        if self.s.demo:
            return checks + [Check("Discord settings", PROBLEM, "none set (cdp serve would run the built-in demo)",
                          "set USER_AUTHORIZATION, BOT_TOKEN, GUILD_ID and COZE_BOT_ID (environment or .env)")]
        for step in (self.bot_token, self.message_content_intent, self.public_key, self.guild_reachable,
                     self.manage_channels, self.private_channels, self.channel_id, self.channels_left, self.bot_config,
                     self.coze_bots, self.user_accounts, self.store):
            try:
                result = await step()
            except DiscordError as exc:  # unexpected answer: report it, carry on with the rest
                result = [Check(step.__name__.replace("_", " "), PROBLEM,
                                f"Discord answered {exc.status or 'nothing'} (code {exc.code}): {exc.message}",
                                "check DISCORD_API_BASE / PROXY_URL and Discord's status, then retry")]
            checks += result if isinstance(result, list) else [result]
        return checks

    # -- who may use the API -----------------------------------------------------------------------
    def api_keys(self) -> list[Check]:
        """An open API (no PROXY_SECRET beyond loopback, or on AWS) and the admin keys."""
        s = self.s
        chat, admin = set(s.api_keys), set(s.admin_keys)
        out = []
        name = "PROXY_SECRET"
        aws = s.CDP_STORE == "dynamodb"  # the API behind API Gateway: public whatever HOST says
        if chat:
            out.append(Check(name, OK, f"{len(chat)} key(s): the API needs one"))
        elif s.demo:
            out.append(Check(name, SKIP, "empty: the demo answers anyone who reaches it (no real account)"))
        elif s.open_api or aws:
            where = ("on AWS the API Gateway URL is public" if aws and not s.open_api
                     else f"HOST={s.HOST} listens beyond this machine")
            fix = ("set PROXY_SECRET to one or more keys (comma-separated); clients send one as "
                   "'Authorization: Bearer <key>'" + ("" if aws else ", or HOST=127.0.0.1"))
            if s.ALLOW_OPEN_API:
                out.append(Check(name, WARN, f"empty and {where}: an open API, on purpose (ALLOW_OPEN_API=1); "
                                             "anyone who reaches it posts through your user accounts", fix))
            else:
                out.append(Check(name, PROBLEM, f"empty and {where}: an open API, anyone who reaches it posts "
                                                "through your user accounts (cdp serve refuses to start)", fix))
        else:
            out.append(Check(name, OK, f"empty, but HOST={s.HOST} listens on this machine only"))
        name = "PROXY_ADMIN_SECRET"
        if chat & admin:
            out.append(Check(name, PROBLEM, f"{len(chat & admin)} key(s) are in PROXY_SECRET too: those chat keys "
                                            "may delete channels and read /api/status",
                             "give the admin keys values of their own, not used by any client"))
        elif admin:
            out.append(Check(name, OK, f"{len(admin)} key(s) guard channel deletion and /api/status; chat keys "
                                       "cannot use them"))
        elif chat:
            out.append(Check(name, WARN, "not set: every PROXY_SECRET key may also delete channels and read "
                                         "/api/status (other keys' requests)",
                             "set PROXY_ADMIN_SECRET to a key of its own and keep it from the clients"))
        else:
            out.append(Check(name, SKIP, "no key configured: the admin routes (/api/status, channel "
                                         "deletion) refuse every request"))
        return out

    # -- the CDP bot ------------------------------------------------------------------------------
    async def bot_token(self) -> Check:
        name = "BOT_TOKEN"
        fp = fingerprint(self.s.BOT_TOKEN)
        try:
            me = await self.rest.get_current_user()
        except DiscordUnauthorized:
            return Check(name, PROBLEM, f"refused by Discord (401) [{fp}]: the token is wrong, or was reset",
                         f"{PORTAL} → your application → Bot → Reset Token; put the new token in BOT_TOKEN")
        if str(me.get("id")) in self.s.coze_bot_ids:
            return Check(name, PROBLEM, f"this is the Coze bot's token ({me.get('username')}, id {me['id']})",
                         "BOT_TOKEN must be the token of your own bot (the CDP bot that listens), not of the "
                         "bot Coze publishes to; create one in " + PORTAL)
        if not me.get("bot"):
            return Check(name, PROBLEM, f"a user account's token ({me.get('username')}), not a bot's",
                         f"{PORTAL} → your application → Bot → Reset Token; user tokens belong in "
                         "USER_AUTHORIZATION")
        self.bot = me
        return Check(name, OK, f"valid: bot {me.get('username')} (id {me['id']}) [{fp}]")

    async def message_content_intent(self) -> Check:
        name = "Message Content intent"
        if self.bot is None:
            return Check(name, SKIP, "needs a valid BOT_TOKEN")
        self.app = await self.rest.get_application()
        flags = int(self.app.get("flags") or 0)
        if flags & (FLAG_MESSAGE_CONTENT | FLAG_MESSAGE_CONTENT_LIMITED):
            return Check(name, OK, f"enabled for application {self.app.get('name')}")
        return Check(name, PROBLEM, f"disabled for application {self.app.get('name')}: the listener would "
                                    "see every Coze reply empty (gateway close 4014)",
                     f"{PORTAL}/{self.app.get('id')}/bot → Privileged Gateway Intents → turn on "
                     "MESSAGE CONTENT INTENT → Save")

    async def public_key(self) -> Check:
        name = "DISCORD_PUBLIC_KEY"
        key = self.s.DISCORD_PUBLIC_KEY
        if not key:
            return Check(name, SKIP, "not set: the /interactions endpoint (slash commands) is off")
        if self.app is None:
            return Check(name, SKIP, "needs a valid BOT_TOKEN")
        if str(self.app.get("verify_key", "")).lower() != key.lower():
            return Check(name, PROBLEM, f"is not the public key of application {self.app.get('name')}",
                         f"copy {PORTAL}/{self.app.get('id')}/information → Public Key into DISCORD_PUBLIC_KEY")
        return Check(name, OK, f"matches application {self.app.get('name')}")

    async def guild_reachable(self) -> Check:
        name = "GUILD_ID"
        if self.bot is None:
            return Check(name, SKIP, "needs a valid BOT_TOKEN")
        gid = self.s.GUILD_ID
        try:
            self.guild = await self.rest.get_guild(gid)
        except (DiscordNotFound, DiscordForbidden):
            pass
        else:
            return Check(name, OK, f"{self.guild.get('name')} ({gid}) reachable by the bot")
        try:  # the classic mix-up: a channel id where the server id belongs
            channel = await self.rest.get_channel(gid)
        except DiscordError:
            channel = None
        if channel is not None:
            return Check(name, PROBLEM, f"{gid} is a channel (#{channel.get('name')}), not a server",
                         f"set GUILD_ID={channel.get('guild_id')} (right-click the server icon → Copy Server ID)"
                         + (f"; {gid} belongs in CHANNEL_ID" if not self.s.CHANNEL_ID else ""))
        return Check(name, PROBLEM, f"server {gid} is unknown to the bot: wrong id, or the bot is not in it",
                     f"check GUILD_ID (right-click the server icon → Copy Server ID) and invite the bot: "
                     f"{invite_url(self.app_id)}")

    async def manage_channels(self) -> Check:
        name = "bot permissions"
        if self.guild is None or self.bot is None:
            return Check(name, SKIP, "needs a reachable GUILD_ID")
        member = await self.rest.get_guild_member(self.s.GUILD_ID, str(self.bot["id"]))
        member.setdefault("user", self.bot)
        perms = self.bot_perms = permissions_of(member, self.guild)
        if perms & (PERM_MANAGE_CHANNELS | PERM_ADMINISTRATOR):
            return Check(name, OK, "the bot may manage channels (temporary conversation channels)")
        if self.s.DEFAULT_CHANNEL_ENABLE:
            return Check(name, OK, "the bot may not manage channels; not needed with DEFAULT_CHANNEL_ENABLE=1")
        return Check(name, PROBLEM, "the bot may not manage channels: every request without channelId would "
                                    "fail (it creates a temporary channel)",
                     "Server Settings → Roles → the bot's role → enable Manage Channels (or re-invite: "
                     f"{invite_url(self.app_id)})")

    async def private_channels(self) -> Check:
        """TEMP_CHANNEL_PRIVATE: the bot creates each temporary channel with permission overwrites, which
        Discord allows with Manage Roles (or Administrator) and only for permissions the bot has."""
        name = "private channels"
        if self.s.DEFAULT_CHANNEL_ENABLE:
            return Check(name, SKIP, "no temporary channels with DEFAULT_CHANNEL_ENABLE=1")
        if not self.s.TEMP_CHANNEL_PRIVATE:
            return Check(name, OK, "TEMP_CHANNEL_PRIVATE=0: every member of the server can read the "
                                   "temporary channels (prompts and answers)")
        perms = self.bot_perms
        if perms is None or not perms & (PERM_MANAGE_CHANNELS | PERM_ADMINISTRATOR):
            return Check(name, SKIP, "needs a bot that may manage channels (see bot permissions)")
        missing = [label for bit, label in ((PERM_MANAGE_ROLES, "Manage Roles"), (PERM_VIEW_CHANNEL, "View Channels"),
                                            (PERM_SEND_MESSAGES, "Send Messages"),
                                            (PERM_READ_MESSAGE_HISTORY, "Read Message History"))
                   if not perms & bit]
        if not missing:
            return Check(name, OK, "the bot may make temporary channels private (permission overwrites)")
        return Check(name, PROBLEM, f"the bot lacks {', '.join(missing)}: it cannot create private temporary "
                                    "channels, so every request without channelId would fail",
                     f"Server Settings → Roles → the bot's role → enable {', '.join(missing)} (or re-invite: "
                     f"{invite_url(self.app_id)}); or set TEMP_CHANNEL_PRIVATE=0 to let every member read them")

    async def channel_id(self) -> Check:
        name = "CHANNEL_ID"
        cid = self.s.CHANNEL_ID
        if not cid:
            return Check(name, SKIP, "not set: every request gets a temporary channel; no keepalive target")
        if self.bot is None:
            return Check(name, SKIP, "needs a valid BOT_TOKEN")
        if cid == self.s.GUILD_ID:
            return Check(name, PROBLEM, "is the server's id, not a channel's",
                         "right-click the text channel → Copy Channel ID, put it in CHANNEL_ID")
        try:
            channel = await self.rest.get_channel(cid)
        except (DiscordNotFound, DiscordForbidden):
            try:  # the mix-up the other way round: a server id where the channel id belongs
                guild = await self.rest.get_guild(cid)
            except DiscordError:
                guild = None
            if guild is not None:
                return Check(name, PROBLEM, f"{cid} is the server's id ({guild.get('name')}), not a channel's",
                             "right-click the text channel → Copy Channel ID, put it in CHANNEL_ID"
                             + (f"; {cid} belongs in GUILD_ID" if cid != self.s.GUILD_ID else ""))
            return Check(name, PROBLEM, f"channel {cid} does not exist or the bot cannot see it",
                         "right-click a text channel of the server → Copy Channel ID (or let the bot see it)")
        if str(channel.get("guild_id")) != self.s.GUILD_ID:
            return Check(name, PROBLEM, f"#{channel.get('name')} belongs to another server "
                                        f"({channel.get('guild_id')})",
                         f"pick a text channel of server {self.s.GUILD_ID}")
        ctype = int(channel.get("type", -1))
        if ctype not in TEXT_CHANNEL_TYPES:
            return Check(name, PROBLEM, f"#{channel.get('name')} is a {CHANNEL_TYPE_NAMES.get(ctype, ctype)} "
                                        "channel, not a text channel",
                         "right-click a text channel → Copy Channel ID")
        return Check(name, OK, f"#{channel.get('name')} is a {TEXT_CHANNEL_TYPES[ctype]} channel of the server")

    async def channels_left(self) -> Check:
        name = "channel limit"
        if self.guild is None:
            return Check(name, SKIP, "needs a reachable GUILD_ID")
        channels = await self.rest.list_guild_channels(self.s.GUILD_ID)
        used = sum(1 for c in channels if int(c.get("type", 0)) not in (10, 11, 12))
        leftovers = sum(1 for c in channels if str(c.get("name", "")).startswith("cdp-chat-"))
        left = GUILD_CHANNEL_LIMIT - used
        detail = f"{used} of {GUILD_CHANNEL_LIMIT} channels used, {left} left"
        if leftovers:
            detail += f" ({leftovers} cdp-chat-* temporary channels among them)"
        if left < CHANNELS_LEFT_WARNING:
            return Check(name, PROBLEM, detail, "delete unused channels (leftover cdp-chat-* ones first), or set "
                                                "MAX_CHANNEL_DEL_TYPE=OLDEST")
        return Check(name, OK, detail)

    # -- the Coze bots and user accounts --------------------------------------------------------------
    async def _member(self, user_id: str) -> dict | None:
        try:
            return await self.rest.get_guild_member(self.s.GUILD_ID, user_id)
        except DiscordNotFound:
            return None

    async def coze_bots(self) -> list[Check]:
        ids = list(dict.fromkeys([*self.s.coze_bot_ids, *(e.coze_bot_id for e in self.bot_entries)]))
        if self.guild is None:
            return [Check(f"Coze bot {b}", SKIP, "needs a reachable GUILD_ID") for b in ids]
        out = []
        for bot_id in ids:
            name = f"Coze bot {bot_id}"
            member = await self._member(bot_id)
            if member is None:
                out.append(Check(name, PROBLEM, "not a member of the server: it would never answer",
                                 "in Coze: your bot → Publish → Discord, with this server (or check COZE_BOT_ID: "
                                 "right-click the Coze bot → Copy User ID)"))
            elif not (member.get("user") or {}).get("bot"):
                out.append(Check(name, PROBLEM, f"{(member.get('user') or {}).get('username')} is a user, not a "
                                                "bot", "COZE_BOT_ID is the user id of the bot Coze publishes to"))
            else:
                out.append(Check(name, OK, f"{member['user'].get('username')} is a member of the server"))
        return out

    async def user_accounts(self) -> list[Check]:
        out: list[Check] = []
        for i, token in enumerate(self.s.user_tokens, 1):
            fp = fingerprint(token)
            name = f"user account #{i} [{fp}]"
            try:
                me = await self.rest.get_current_user(token)
            except (DiscordUnauthorized, DiscordVerificationRequired) as exc:
                out.append(Check(name, PROBLEM, f"refused by Discord ({exc.status}): expired, logged out or "
                                                "password changed",
                                 "log in to discord.com in a browser with that account, copy a fresh token "
                                 "(devtools → a request's Authorization header) into USER_AUTHORIZATION"))
                continue
            if me.get("bot"):
                out.append(Check(name, PROBLEM, f"a bot's token ({me.get('username')}), not a user's",
                                 "USER_AUTHORIZATION takes Discord user tokens (comma-separated)"))
                continue
            if me.get("verified") is False:
                out.append(Check(name, PROBLEM, f"{me.get('username')} must verify the account before it may post",
                                 "log in with that account and complete Discord's email/phone verification"))
                continue
            out.append(Check(name, OK, f"valid: {me.get('username')} (id {me.get('id')})"))
            if self.guild is None:
                out.append(Check(f"{name} in server", SKIP, "needs a reachable GUILD_ID"))
            elif await self._member(str(me.get("id"))) is None:
                out.append(Check(f"{name} in server", PROBLEM, f"{me.get('username')} is not a member of the server",
                                 "join the server with that account (Server → Invite People → open the link "
                                 "logged in as that account)"))
            else:
                out.append(Check(f"{name} in server", OK, f"{me.get('username')} is a member of the server"))
        if not out:
            out.append(Check("USER_AUTHORIZATION", PROBLEM, "no user token set",
                             "put at least one Discord user token in USER_AUTHORIZATION"))
        return out

    # -- files and store ------------------------------------------------------------------------------
    async def bot_config(self) -> Check:
        name = "bot_config.json"
        try:
            from cdp.adapters import botconfig
        except ImportError:
            return Check(name, SKIP, "this build has no bot_config.json support")
        try:
            entries = botconfig.load_bot_config(self.s, self.cwd)
        except botconfig.BotConfigError as exc:
            return Check(name, PROBLEM, "; ".join(exc.problems), "correct the file (see the README's bot "
                                                                  "config section) or remove it")
        if not entries:
            return Check(name, SKIP, "none (every model is served by COZE_BOT_ID)")
        self.bot_entries = entries
        keys = set(self.s.api_keys)
        unreachable = [e for e in entries if e.proxy_secret not in keys]
        if unreachable:
            which = ", ".join(f"entry {e.index} [{fingerprint(e.proxy_secret)}]" for e in unreachable)
            why = ("PROXY_SECRET is empty" if not keys
                   else "their proxySecret is not one of PROXY_SECRET's keys")
            return Check(name, PROBLEM, f"{len(unreachable)} of {len(entries)} entries unreachable ({which}): {why}",
                         "add each entry's proxySecret to PROXY_SECRET (comma-separated), or correct the entry")
        return Check(name, OK, f"{len(entries)} entries, every proxySecret is one of PROXY_SECRET's keys")

    async def store(self) -> Check:
        name = "store"
        if self.s.CDP_STORE != "dynamodb":
            return Check(name, OK, "in memory (cdp serve keeps replies and channels in the process)")
        try:
            from cdp.adapters.store.dynamodb import describe_table, error_code
        except ImportError:
            return Check(name, SKIP, "this build has no DynamoDB store")
        missing, states = [], []
        for table in (self.s.replies_table, self.s.state_table):
            try:
                states.append(f"{table} {(await describe_table(table, self.s)).get('TableStatus', '?')}")
            except Exception as exc:  # ResourceNotFoundException, no credentials, unreachable endpoint
                missing.append(f"{table} ({error_code(exc) or type(exc).__name__})")
        if missing:
            return Check(name, PROBLEM, "DynamoDB tables not usable: " + ", ".join(missing),
                         "deploy template.yaml (sam deploy), or set CDP_REPLIES_TABLE / CDP_STATE_TABLE / "
                         "CDP_TABLE_PREFIX and AWS credentials / AWS_REGION to the stack's tables")
        return Check(name, OK, "DynamoDB: " + ", ".join(states))


async def run_checks(settings: Settings, rest: DiscordRestPort, *, cwd=None) -> list[Check]:
    return await Doctor(settings, rest, cwd=cwd).run()


def settings_problems(problems: Iterable[str]) -> list[Check]:
    """SettingsError lines as doctor checks (the settings themselves are the first check)."""
    return [Check("settings", PROBLEM, p, "correct it in the environment or .env") for p in problems]


def summary(checks: list[Check]) -> dict[str, Any]:
    return {"ok": sum(c.state == OK for c in checks), "problems": sum(c.problem for c in checks)}
