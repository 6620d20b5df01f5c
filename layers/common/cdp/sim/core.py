"""State and behaviour of the fake Discord (all mutations happen on the server's event loop)."""

from __future__ import annotations

import copy
import re
import time
from typing import Any

from .config import SimConfig
from .util import ApiError, SnowflakeGen, form_error, iso_now, number_components

INTENT_GUILDS = 1 << 0
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_MESSAGE_CONTENT = 1 << 15

EVERYONE_PERMS = "2222085186637376"
PERM_ADMINISTRATOR = 1 << 3
PERM_MANAGE_CHANNELS = 1 << 4
PERM_MANAGE_GUILD = 1 << 5
PERM_VIEW_CHANNEL = 1 << 10
PERM_SEND_MESSAGES = 1 << 11
PERM_READ_MESSAGE_HISTORY = 1 << 16
PERM_MANAGE_ROLES = 1 << 28
ALL_PERMS = (1 << 53) - 1
# the managed role Discord gives a bot invited with permissions (here: the CDP bot may manage channels
# and roles, so it may create channels with permission overwrites)
BOT_ROLE_PERMS = str(int(EVERYONE_PERMS) | PERM_MANAGE_CHANNELS | PERM_MANAGE_ROLES)
# what every member has in the other server (the bot included: it may delete channels there)
OTHER_GUILD_PERMS = int(EVERYONE_PERMS) | PERM_MANAGE_CHANNELS
DM_PERMS = PERM_VIEW_CHANNEL | PERM_SEND_MESSAGES | PERM_READ_MESSAGE_HISTORY
THREAD_TYPES = (10, 11, 12)
DM_TYPES = (1, 3)
INTERACTION_TOKEN_TTL = 15 * 60

USER_MENTION_RE = re.compile(r"<@!?(\d{15,25})>")
ROLE_MENTION_RE = re.compile(r"<@&(\d{15,25})>")


def _user(uid: str, username: str, *, bot: bool = False, global_name: str | None = None) -> dict:
    u = {
        "id": uid,
        "username": username,
        "discriminator": "0",
        "global_name": global_name,
        "avatar": None,
        "avatar_decoration_data": None,
        "banner": None,
        "accent_color": None,
        "public_flags": 0,
        "flags": 0,
    }
    if bot:
        u["bot"] = True
    return u


class Sim:
    def __init__(self, config: SimConfig | None = None) -> None:
        self.cfg = config or SimConfig()
        self.ids = SnowflakeGen()
        self.port: int = self.cfg.port
        self.started_at = time.time()
        cfg = self.cfg
        # users
        self.users: dict[str, dict] = {}
        self.tokens: dict[str, tuple[str, str]] = {}  # token -> (kind, user id); kind "bot" | "user"
        self.users[cfg.bot_user_id] = _user(cfg.bot_user_id, cfg.bot_name, bot=True)
        self.tokens[cfg.bot_token] = ("bot", cfg.bot_user_id)
        for i, cid in enumerate(cfg.coze_bot_ids):
            self.users[cid] = _user(cid, f"coze-sim-bot{i + 1 if i else ''}", bot=True, global_name="Coze Sim Bot")
            tok = cfg.coze_bot_tokens.get(cid)
            if tok:
                self.tokens[tok] = ("bot", cid)
        for i, (tok, uid) in enumerate(cfg.user_tokens.items()):
            name = ["alice", "bob", "carol", "dave"][i] if i < 4 else f"user{i}"
            self.users.setdefault(uid, _user(uid, name, global_name=name.title()))
            self.tokens[tok] = ("user", uid)
        self.users[cfg.bystander_id] = _user(cfg.bystander_id, "eve", global_name="Eve")
        self.tokens[cfg.bystander_token] = ("user", cfg.bystander_id)
        # the other server: the CDP bot and the proxy's user accounts are members of it too
        self.other_members = {cfg.bot_user_id, *cfg.user_tokens.values()}
        self.revoked: set[str] = set()
        self.unverified: set[str] = set()
        self.max_channels = cfg.max_channels
        self.session_start_remaining = cfg.session_start_total
        self.joined_at = iso_now()
        # guild
        self.roles = [
            {
                "id": cfg.guild_id,
                "name": "@everyone",
                "color": 0,
                "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
                "hoist": False,
                "icon": None,
                "unicode_emoji": None,
                "position": 0,
                "permissions": EVERYONE_PERMS,
                "managed": False,
                "mentionable": False,
                "flags": 0,
            }
        ]
        bot_role = copy.deepcopy(self.roles[0])
        bot_role.update({"id": str(int(cfg.guild_id) + 100), "name": cfg.bot_name, "position": 1,
                         "permissions": BOT_ROLE_PERMS, "managed": True, "tags": {"bot_id": cfg.bot_user_id}})
        self.roles.append(bot_role)
        self.member_roles: dict[str, list[str]] = {cfg.bot_user_id: [bot_role["id"]]}
        self.non_members: set[str] = set()  # users that are not (or no longer) in the guild
        self.commands: dict[str, list[dict]] = {}  # "global" or guild id -> application commands
        self.interactions: dict[str, dict] = {}  # interaction token -> the interaction Discord sent
        self.interaction_responses: list[dict] = []  # every edit of an original response, in order
        self.channels: dict[str, dict] = {}
        self.created: list[dict] = []
        self.deleted: list[dict] = []
        self._add_channel({"id": cfg.category_id, "type": 4, "name": "Text Channels", "parent_id": None}, record=False)
        self._add_channel({"id": cfg.channel_id, "type": 0, "name": "general", "parent_id": cfg.category_id}, record=False)
        self._add_channel({"id": cfg.other_channel_id, "type": 0, "name": "elsewhere", "parent_id": None,
                           "guild_id": cfg.other_guild_id}, record=False)
        accounts = list(dict.fromkeys(cfg.user_tokens.values()))[:2]
        self.channels[cfg.dm_channel_id] = {"id": cfg.dm_channel_id, "type": 1, "last_message_id": None, "flags": 0,
                                            "recipients": [copy.deepcopy(self.users[u]) for u in accounts]}
        self.messages: dict[str, list[dict]] = {}
        self.msg_index: dict[str, dict] = {}
        self.attachments: dict[tuple[str, str, str], tuple[bytes, str]] = {}
        self.nonces: dict[tuple[str, str], tuple[str, float]] = {}
        self.request_log: list[dict] = []
        self.fail_rules: list[dict] = []
        self.inject_rules: list[dict] = []
        # faults after the route ran (the message is stored): {method, path, status, code, message, delay, count}
        self.accept_then_fail_rules: list[dict] = []
        # late imports to avoid cycles
        from .coze import CozeSim
        from .gateway import GatewayHub
        from .ratelimit import RateLimiter

        self.ratelimiter = RateLimiter(self)
        self.gateway = GatewayHub(self)
        self.coze = CozeSim(self)

    # ------------------------------------------------------------------ urls
    @property
    def root_url(self) -> str:
        return f"http://{self.cfg.host}:{self.port}"

    @property
    def gateway_url(self) -> str:
        return f"ws://{self.cfg.host}:{self.port}/gateway"

    @property
    def resume_gateway_url(self) -> str:
        return f"ws://{self.cfg.host}:{self.port}/gateway-resume"

    # ------------------------------------------------------------------ auth
    def authenticate(self, header: str | None) -> tuple[str, str, str]:
        """Return (kind, user_id, token) or raise 401."""
        unauthorized = ApiError(401, 0, "401: Unauthorized")
        if not header:
            raise unauthorized
        if header.startswith("Bot "):
            tok = header[4:].strip()
            entry = self.tokens.get(tok)
            if not entry or entry[0] != "bot" or tok in self.revoked:
                raise unauthorized
            return entry[0], entry[1], tok
        if header.startswith("Bearer "):
            raise unauthorized
        tok = header.strip()
        entry = self.tokens.get(tok)
        if not entry or entry[0] != "user" or tok in self.revoked:
            raise unauthorized
        return entry[0], entry[1], tok

    # ------------------------------------------------------------------ objects
    def member(self, uid: str, *, with_user: bool = True) -> dict:
        m = {
            "nick": None,
            "avatar": None,
            "banner": None,
            "roles": list(self.member_roles.get(uid, [])),
            "joined_at": self.joined_at,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }
        if with_user:
            m = {"user": copy.deepcopy(self.users[uid]), **m}
        return m

    def guild_object(self, *, full: bool = False) -> dict:
        cfg = self.cfg
        g: dict[str, Any] = {
            "id": cfg.guild_id,
            "name": cfg.guild_name,
            "icon": None,
            "icon_hash": None,
            "splash": None,
            "discovery_splash": None,
            "owner_id": cfg.owner_id,
            "region": "deprecated",
            "afk_channel_id": None,
            "afk_timeout": 300,
            "widget_enabled": False,
            "widget_channel_id": None,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": copy.deepcopy(self.roles),
            "emojis": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": cfg.channel_id,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "max_presences": None,
            "max_members": 500000,
            "vanity_url_code": None,
            "description": None,
            "banner": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "public_updates_channel_id": None,
            "max_video_channel_users": 25,
            "max_stage_video_channel_users": 50,
            "nsfw_level": 0,
            "nsfw": False,
            "stickers": [],
            "premium_progress_bar_enabled": False,
            "safety_alerts_channel_id": None,
            "incidents_data": None,
            "hub_type": None,
        }
        if full:
            members = [self.member(uid) for uid in self.users if uid not in self.non_members]
            g.update(
                {
                    "joined_at": self.joined_at,
                    "large": False,
                    "unavailable": False,
                    "lazy": True,
                    "member_count": len(members),
                    "voice_states": [],
                    "members": members,
                    "channels": [copy.deepcopy(c) for c in self.guild_channels() if c["type"] not in THREAD_TYPES],
                    "threads": [copy.deepcopy(c) for c in self.guild_channels() if c["type"] in THREAD_TYPES],
                    "presences": [],
                    "stage_instances": [],
                    "guild_scheduled_events": [],
                    "soundboard_sounds": [],
                    "embedded_activities": [],
                    "application_command_counts": {},
                }
            )
            for c in g["channels"] + g["threads"]:
                c.pop("guild_id", None)  # channels in GUILD_CREATE omit guild_id
        return g

    def application_object(self) -> dict:
        cfg = self.cfg
        return {
            "id": cfg.application_id,
            "name": cfg.bot_name,
            "icon": None,
            "description": "Simulated CDP bot application",
            "summary": "",
            "type": None,
            "hook": True,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": cfg.app_public_key,
            "flags": cfg.app_flags,
            "owner": copy.deepcopy(self.users[cfg.owner_id]) if cfg.owner_id in self.users else None,
            "team": None,
            "guild_id": cfg.guild_id,
            "bot": copy.deepcopy(self.users[cfg.bot_user_id]),
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "role_connections_verification_url": None,
            "tags": [],
            "approximate_guild_count": 1,
            "approximate_user_install_count": 0,
            "approximate_user_authorization_count": 0,
            "event_webhooks_status": 1,
            "install_params": {"scopes": ["bot", "applications.commands"], "permissions": "0"},
            "integration_types_config": {"0": {"oauth2_install_params": {"scopes": ["bot"], "permissions": "0"}}},
            "is_monetized": False,
        }

    def _add_channel(self, spec: dict, *, record: bool = True) -> dict:
        ctype = int(spec.get("type", 0))
        guild_id = spec.get("guild_id") or self.cfg.guild_id
        position = sum(1 for c in self.channels.values() if c["type"] == ctype and c.get("guild_id") == guild_id)
        ch: dict[str, Any] = {
            "id": spec["id"],
            "type": ctype,
            "guild_id": guild_id,
            "name": spec["name"],
            "position": spec.get("position", position),
            "permission_overwrites": spec.get("permission_overwrites", []),
            "nsfw": bool(spec.get("nsfw", False)),
            "parent_id": spec.get("parent_id"),
            "flags": 0,
        }
        if ctype in (0, 5):
            ch.update(
                {
                    "topic": spec.get("topic"),
                    "last_message_id": None,
                    "rate_limit_per_user": int(spec.get("rate_limit_per_user", 0)),
                    "last_pin_timestamp": None,
                    "default_thread_rate_limit_per_user": 0,
                }
            )
        self.channels[ch["id"]] = ch
        if record:
            self.created.append({**copy.deepcopy(ch), "_created_at": time.time()})
        return ch

    # ------------------------------------------------------------------ permissions, interactions
    def permissions(self, uid: str) -> int:
        """Guild-level permissions of a member: @everyone | its roles (all for the owner/administrators)."""
        if uid == self.cfg.owner_id:
            return (1 << 53) - 1
        by_id = {r["id"]: int(r["permissions"]) for r in self.roles}
        perms = by_id.get(self.cfg.guild_id, 0)
        for rid in self.member_roles.get(uid, []):
            perms |= by_id.get(rid, 0)
        return (1 << 53) - 1 if perms & PERM_ADMINISTRATOR else perms

    def guild_channels(self) -> list[dict]:
        """The channels (and threads) of the proxy's server, not those of the other server or DMs."""
        return [c for c in self.channels.values() if c.get("guild_id") == self.cfg.guild_id]

    def channel_permissions(self, uid: str, ch: dict) -> int:
        """Discord's permission computation for `uid` in channel `ch`: guild base permissions, then the
        channel's overwrites (@everyone, the member's roles, the member); threads use their parent's."""
        if ch["type"] in DM_TYPES:
            return DM_PERMS if any(u["id"] == uid for u in ch.get("recipients") or []) else 0
        if ch["type"] in THREAD_TYPES and ch.get("parent_id") in self.channels:
            return self.channel_permissions(uid, self.channels[ch["parent_id"]])
        gid = ch.get("guild_id")
        if gid != self.cfg.guild_id:
            return OTHER_GUILD_PERMS if uid in self.other_members else 0
        if uid in self.non_members or uid not in self.users:
            return 0
        base = self.permissions(uid)
        if base & PERM_ADMINISTRATOR or uid == self.cfg.owner_id:
            return ALL_PERMS
        ows = {str(o.get("id")): o for o in ch.get("permission_overwrites") or []}

        def apply(perms: int, allow: int, deny: int) -> int:
            return (perms & ~deny) | allow

        if gid in ows:
            base = apply(base, int(ows[gid].get("allow") or 0), int(ows[gid].get("deny") or 0))
        allow = deny = 0
        for rid in self.member_roles.get(uid, []):
            o = ows.get(rid)
            if o is not None and int(o.get("type", 0)) == 0:
                allow |= int(o.get("allow") or 0)
                deny |= int(o.get("deny") or 0)
        base = apply(base, allow, deny)
        o = ows.get(uid)
        if o is not None and int(o.get("type", 0)) == 1:
            base = apply(base, int(o.get("allow") or 0), int(o.get("deny") or 0))
        return base

    def can(self, uid: str, channel_id: str, perm: int) -> bool:
        """Whether `uid` has every bit of `perm` in the channel (unknown channels: False)."""
        ch = self.channels.get(channel_id)
        return ch is not None and self.channel_permissions(uid, ch) & perm == perm

    def require_channel_permission(self, uid: str, channel_id: str, perm: int) -> dict:
        """The channel, if `uid` may see it and has `perm` there: 404 for unknown channels, 403 50001
        (Missing Access) for ones it cannot see, 403 50013 (Missing Permissions) otherwise."""
        ch = self.get_channel(channel_id)
        perms = self.channel_permissions(uid, ch)
        if not perms & PERM_VIEW_CHANNEL:
            raise ApiError(403, 50001, "Missing Access")
        if perms & perm != perm:
            raise ApiError(403, 50013, "Missing Permissions")
        return ch

    def check_overwrites(self, uid: str, guild_id: str, overwrites: Any) -> list[dict]:
        """Validate `permission_overwrites` of a channel creation by `uid` as Discord does: well-formed,
        and (without Administrator) the creator needs MANAGE_ROLES and may only allow or deny
        permissions it has itself. Returns them normalized (strings)."""
        if overwrites is None:
            return []
        if not isinstance(overwrites, list):
            raise form_error(["permission_overwrites"], "MODEL_TYPE_CONVERT", "Only iterables may be used in a ListType")
        out = []
        for i, o in enumerate(overwrites):
            if not isinstance(o, dict) or not str(o.get("id", "")).isdigit() or o.get("type") not in (0, 1, "0", "1"):
                raise form_error(["permission_overwrites", i], "MODEL_TYPE_CONVERT", "Invalid overwrite")
            try:
                allow, deny = int(o.get("allow") or 0), int(o.get("deny") or 0)
            except (TypeError, ValueError):
                raise form_error(["permission_overwrites", i, "allow"], "NUMBER_TYPE_COERCE", "Value is not int.") from None
            if int(o["type"]) == 0 and str(o["id"]) not in {r["id"] for r in self.roles}:
                raise form_error(["permission_overwrites", i, "id"], "UNKNOWN_ROLE", "Unknown role")
            out.append({"id": str(o["id"]), "type": int(o["type"]), "allow": str(allow), "deny": str(deny)})
        if out and guild_id == self.cfg.guild_id:
            perms = self.permissions(uid)
            if not perms & PERM_ADMINISTRATOR:
                wanted = 0
                for o in out:
                    wanted |= int(o["allow"]) | int(o["deny"])
                if not perms & PERM_MANAGE_ROLES or wanted & ~perms:
                    raise ApiError(403, 50013, "Missing Permissions")
        return out

    def set_overwrite(self, uid: str, channel_id: str, overwrite_id: str, body: dict) -> None:
        """PUT /channels/{id}/permissions/{overwrite_id} by `uid`: add or replace one overwrite."""
        ch = self.require_channel_permission(uid, channel_id, 0)
        if ch["type"] in DM_TYPES or ch["type"] in THREAD_TYPES:
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        if ch.get("guild_id") == self.cfg.guild_id and not self.permissions(uid) & (PERM_MANAGE_ROLES | PERM_ADMINISTRATOR):
            raise ApiError(403, 50013, "Missing Permissions")
        (ow,) = self.check_overwrites(uid, ch["guild_id"], [{**body, "id": overwrite_id}])
        rest = [o for o in ch.get("permission_overwrites") or [] if str(o["id"]) != overwrite_id]
        ch["permission_overwrites"] = [*rest, ow]
        self.gateway.dispatch_guild("CHANNEL_UPDATE", copy.deepcopy(ch), INTENT_GUILDS)

    def require_permission(self, uid: str, perm: int) -> None:
        if not self.permissions(uid) & perm:
            raise ApiError(403, 50013, "Missing Permissions")

    def set_role_permissions(self, role_id: str, permissions: int) -> None:
        for r in self.roles:
            if r["id"] == role_id:
                r["permissions"] = str(int(permissions))
                return
        raise KeyError(role_id)

    def issue_interaction(self, name: str, subcommand: str | None = None, user_id: str | None = None,
                          guild_id: str | None = None) -> dict:
        """The APPLICATION_COMMAND interaction Discord would POST to the interactions endpoint."""
        uid = user_id or self.cfg.owner_id
        token = "aW50ZXJhY3Rpb246" + self.ids.next() + "sim" + "x" * 40
        options = [{"type": 1, "name": subcommand, "options": []}] if subcommand else []
        interaction = {
            "id": self.ids.next(), "application_id": self.cfg.application_id, "type": 2,
            "data": {"id": self.ids.next(), "name": name, "type": 1, "options": options,
                     "guild_id": guild_id or self.cfg.guild_id},
            "guild_id": guild_id or self.cfg.guild_id, "channel_id": self.cfg.channel_id,
            "member": {**self.member(uid), "permissions": str(self.permissions(uid))},
            "token": token, "version": 1, "app_permissions": str(self.permissions(self.cfg.bot_user_id)),
            "locale": "en-US", "guild_locale": "en-US", "entitlements": [], "authorizing_integration_owners": {"0": self.cfg.guild_id},
            "context": 0,
        }
        self.interactions[token] = {**interaction, "_at": time.time()}
        return interaction

    # ------------------------------------------------------------------ channels
    def get_channel(self, channel_id: str) -> dict:
        ch = self.channels.get(channel_id)
        if ch is None:
            raise ApiError(404, 10003, "Unknown Channel")
        return ch

    def create_channel(self, guild_id: str, body: dict, creator_id: str = "") -> dict:
        if guild_id != self.cfg.guild_id:
            raise ApiError(404, 10004, "Unknown Guild")
        overwrites = self.check_overwrites(creator_id, guild_id, body.get("permission_overwrites"))
        name = body.get("name")
        if not isinstance(name, str) or not (1 <= len(name) <= 100):
            raise form_error(["name"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        ctype = body.get("type", 0)
        if ctype not in (0, 2, 4, 5, 13, 15, 16):
            raise form_error(["type"], "BASE_TYPE_CHOICES", "Value must be one of {0, 2, 4, 5, 13, 15, 16}.")
        parent = body.get("parent_id")
        if parent is not None:
            p = self.channels.get(str(parent))
            if p is None or p["type"] != 4 or p.get("guild_id") != guild_id:
                raise form_error(["parent_id"], "CHANNEL_PARENT_INVALID_TYPE", "Not a category")
            if ctype == 4:
                raise form_error(["parent_id"], "CHANNEL_PARENT_INVALID_TYPE", "Categories cannot have parents")
        count = sum(1 for c in self.guild_channels() if c["type"] not in THREAD_TYPES)
        if count >= self.max_channels:
            raise ApiError(400, 30013, f"Maximum number of server channels reached ({self.max_channels})")
        if ctype == 0:
            name = re.sub(r"[\s]+", "-", name.strip().lower())
        ch = self._add_channel(
            {
                "id": self.ids.next(),
                "type": ctype,
                "name": name,
                "parent_id": str(parent) if parent is not None else None,
                "topic": body.get("topic"),
                "nsfw": body.get("nsfw", False),
                "rate_limit_per_user": body.get("rate_limit_per_user", 0),
                "permission_overwrites": overwrites,
            }
        )
        self.gateway.dispatch_guild("CHANNEL_CREATE", copy.deepcopy(ch), INTENT_GUILDS)
        return ch

    def delete_channel(self, channel_id: str) -> dict:
        ch = self.get_channel(channel_id)
        del self.channels[channel_id]
        self.deleted.append({**copy.deepcopy(ch), "_deleted_at": time.time()})
        event = "THREAD_DELETE" if ch["type"] in (10, 11, 12) else "CHANNEL_DELETE"
        if event == "THREAD_DELETE":
            data = {k: ch[k] for k in ("id", "guild_id", "parent_id", "type")}
        else:
            data = copy.deepcopy(ch)
        self.gateway.dispatch_guild(event, data, INTENT_GUILDS)
        # threads of a deleted channel go too
        for tid in [c["id"] for c in self.channels.values() if c.get("parent_id") == channel_id and c["type"] in (10, 11, 12)]:
            self.channels.pop(tid, None)
        # Attachments of a deleted channel stop being served (their signed CDN URLs die with it).
        for key in [k for k in self.attachments if k[0] == channel_id]:
            del self.attachments[key]
        return ch

    def create_thread(self, channel_id: str, body: dict, author_id: str, message_id: str | None) -> dict:
        parent = self.get_channel(channel_id)
        name = body.get("name")
        if not isinstance(name, str) or not (1 <= len(name) <= 100):
            raise form_error(["name"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        dur = body.get("auto_archive_duration", 4320)
        if dur not in (60, 1440, 4320, 10080):
            raise form_error(["auto_archive_duration"], "BASE_TYPE_CHOICES", "Value must be one of {60, 1440, 4320, 10080}.")
        if parent["type"] not in (0, 5, 15, 16):
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        if message_id is not None:
            msg = self.msg_index.get(message_id)
            if msg is None or msg["channel_id"] != channel_id:
                raise ApiError(404, 10008, "Unknown Message")
            if message_id in self.channels:
                raise ApiError(400, 160004, "A thread has already been created for this message")
            tid, ttype = message_id, (10 if parent["type"] == 5 else 11)
        else:
            tid, ttype = self.ids.next(), int(body.get("type", 12))
            if ttype not in (10, 11, 12):
                raise form_error(["type"], "BASE_TYPE_CHOICES", "Value must be one of {10, 11, 12}.")
        now = iso_now()
        th = {
            "id": tid,
            "type": ttype,
            "guild_id": parent.get("guild_id"),
            "parent_id": channel_id,
            "owner_id": author_id,
            "name": name,
            "last_message_id": None,
            "message_count": 0,
            "member_count": 1,
            "rate_limit_per_user": int(body.get("rate_limit_per_user", 0)),
            "flags": 0,
            "total_message_sent": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": dur,
                "archive_timestamp": now,
                "locked": False,
                "create_timestamp": now,
                **({"invitable": bool(body.get("invitable", True))} if ttype == 12 else {}),
            },
            "member": {"id": tid, "user_id": author_id, "join_timestamp": now, "flags": 0},
        }
        self.channels[tid] = th
        self.created.append({**copy.deepcopy(th), "_created_at": time.time()})
        if message_id is not None:
            self.msg_index[message_id]["thread"] = copy.deepcopy(th)
        ev = copy.deepcopy(th)
        ev["newly_created"] = True
        self.gateway.dispatch_guild("THREAD_CREATE", ev, INTENT_GUILDS)
        return th

    # ------------------------------------------------------------------ messages
    def compute_mentions(self, content: str, allowed: dict | None, reply_to: dict | None) -> tuple[list[str], list[str], bool]:
        if allowed is None:
            parse = {"users", "roles", "everyone"}
            allowed_users: set[str] = set()
            allowed_roles: set[str] = set()
            replied_user = True
        else:
            if not isinstance(allowed, dict):
                raise form_error(["allowed_mentions"], "MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
            parse = set(allowed.get("parse") or [])
            bad = parse - {"users", "roles", "everyone"}
            if bad:
                raise form_error(["allowed_mentions", "parse", 0], "BASE_TYPE_CHOICES", "Value must be one of ('roles', 'users', 'everyone').")
            allowed_users = {str(u) for u in allowed.get("users") or []}
            allowed_roles = {str(r) for r in allowed.get("roles") or []}
            if "users" in parse and allowed_users:
                raise form_error(["allowed_mentions"], "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE", 'parse:["users"] and users: [ids...] are mutually exclusive.')
            if "roles" in parse and allowed_roles:
                raise form_error(["allowed_mentions"], "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE", 'parse:["roles"] and roles: [ids...] are mutually exclusive.')
            if len(allowed_users) > 100 or len(allowed_roles) > 100:
                raise form_error(["allowed_mentions"], "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
            replied_user = bool(allowed.get("replied_user", False))
        users: list[str] = []
        for uid in USER_MENTION_RE.findall(content or ""):
            if uid in self.users and uid not in users and ("users" in parse or uid in allowed_users):
                users.append(uid)
        role_ids = {r["id"] for r in self.roles}
        roles: list[str] = []
        for rid in ROLE_MENTION_RE.findall(content or ""):
            if rid in role_ids and rid not in roles and rid != self.cfg.guild_id and ("roles" in parse or rid in allowed_roles):
                roles.append(rid)
        everyone = "everyone" in parse and bool(re.search(r"@(everyone|here)\b", content or ""))
        if reply_to is not None and replied_user:
            ra = reply_to["author"]["id"]
            if ra not in users:
                users.append(ra)
        return users, roles, everyone

    def build_message(self, channel_id: str, author_id: str, body: dict, attachments: list[dict], *, mtype: int | None = None, reply_to: dict | None = None) -> dict:
        content = body.get("content") or ""
        users, roles, everyone = self.compute_mentions(content, body.get("allowed_mentions"), reply_to)
        mid = self.ids.next()
        msg: dict[str, Any] = {
            "id": mid,
            "type": mtype if mtype is not None else (19 if reply_to is not None else 0),
            "content": content,
            "channel_id": channel_id,
            "author": copy.deepcopy(self.users[author_id]),
            "attachments": attachments,
            "embeds": [self._normalize_embed(e) for e in body.get("embeds") or []],
            "mentions": [copy.deepcopy(self.users[u]) for u in users],
            "mention_roles": roles,
            "mention_everyone": everyone,
            "pinned": False,
            "tts": bool(body.get("tts", False)),
            "timestamp": iso_now(),
            "edited_timestamp": None,
            "flags": int(body.get("flags", 0) or 0) & (1 << 2 | 1 << 12),
            "components": number_components(body.get("components") or []),
        }
        if "nonce" in body and body["nonce"] is not None:
            msg["nonce"] = body["nonce"]
        if reply_to is not None:
            msg["message_reference"] = {
                "type": 0,
                "channel_id": reply_to["channel_id"],
                "message_id": reply_to["id"],
                "guild_id": self.cfg.guild_id,
            }
            ref = copy.deepcopy(reply_to)
            ref.pop("referenced_message", None)
            msg["referenced_message"] = ref
        return msg

    @staticmethod
    def _normalize_embed(e: dict) -> dict:
        e = copy.deepcopy(e)
        e.setdefault("type", "rich")
        for k in ("image", "thumbnail"):
            if isinstance(e.get(k), dict) and "url" in e[k]:
                e[k].setdefault("proxy_url", e[k]["url"])
        return e

    def validate_message_body(self, body: dict, has_files: bool) -> None:
        content = body.get("content")
        if content is not None and not isinstance(content, str):
            raise form_error(["content"], "BASE_TYPE_STRING", "Could not interpret value as string.")
        if content is not None and len(content) > 2000:
            raise form_error(["content"], "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
        nonce = body.get("nonce")
        if nonce is not None:
            if isinstance(nonce, str) and len(nonce) > 25:
                raise form_error(["nonce"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
            if not isinstance(nonce, (str, int)):
                raise form_error(["nonce"], "BASE_TYPE_STRING", "Could not interpret value as string.")
        embeds = body.get("embeds") or []
        if len(embeds) > 10:
            raise form_error(["embeds"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        if not (content or "").strip() and not has_files and not embeds and not body.get("sticker_ids") and not body.get("components") and not body.get("poll"):
            raise ApiError(400, 50006, "Cannot send an empty message")

    def post_message(self, channel_id: str, author_id: str, body: dict, files: list[tuple[int, str, str, bytes]] | None = None) -> tuple[dict, bool]:
        """Create a message from a REST call. Returns (message, created)."""
        ch = self.get_channel(channel_id)
        if ch["type"] in (2, 4, 13, 15, 16):
            raise ApiError(400, 50008, "Cannot send messages in a non-text channel")
        files = files or []
        self.validate_message_body(body, bool(files))
        nonce = body.get("nonce")
        if nonce is not None and body.get("enforce_nonce"):
            key = (author_id, str(nonce))
            hit = self.nonces.get(key)
            if hit and time.time() - hit[1] < 300 and hit[0] in self.msg_index:
                return copy.deepcopy(self.msg_index[hit[0]]), False
        reply_to = None
        ref = body.get("message_reference")
        if isinstance(ref, dict) and ref.get("message_id"):
            reply_to = self.msg_index.get(str(ref["message_id"]))
            if reply_to is None and ref.get("fail_if_not_exists", True):
                raise form_error(["message_reference"], "REPLIES_UNKNOWN_MESSAGE", "Unknown message")
        attachments = self._store_files(channel_id, body, files)
        msg = self.build_message(channel_id, author_id, body, attachments, reply_to=reply_to)
        self.store_and_dispatch(msg)
        if nonce is not None:
            self.nonces[(author_id, str(nonce))] = (msg["id"], time.time())
        return copy.deepcopy(msg), True

    def _store_files(self, channel_id: str, body: dict, files: list[tuple[int, str, str, bytes]]) -> list[dict]:
        meta = {}
        for a in body.get("attachments") or []:
            if isinstance(a, dict) and "id" in a:
                meta[str(a["id"])] = a
        out = []
        for n, filename, ctype, data in files:
            if len(data) > self.cfg.max_file_size:
                raise ApiError(413, 40005, "Request entity too large")
            m = meta.get(str(n), {})
            fname = m.get("filename") or filename or f"file{n}"
            fname = re.sub(r"[^A-Za-z0-9._-]", "_", fname)
            out.append(self.add_attachment(channel_id, fname, ctype, data, description=m.get("description")))
        return out

    def add_attachment(self, channel_id: str, filename: str, content_type: str, data: bytes, description: str | None = None) -> dict:
        aid = self.ids.next()
        self.attachments[(channel_id, aid, filename)] = (data, content_type)
        now = int(time.time())
        url = f"{self.root_url}/attachments/{channel_id}/{aid}/{filename}?ex={now + 86400:x}&is={now:x}&hm={aid[-8:]}&"
        att = {
            "id": aid,
            "filename": filename,
            "size": len(data),
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
        }
        if description:
            att["description"] = description
        if content_type.startswith("image/"):
            att["width"] = 1
            att["height"] = 1
        return att

    def store_and_dispatch(self, msg: dict) -> None:
        self.messages.setdefault(msg["channel_id"], []).append(msg)
        self.msg_index[msg["id"]] = msg
        ch = self.channels.get(msg["channel_id"])
        if ch is not None:
            ch["last_message_id"] = msg["id"]
            if "message_count" in ch:
                ch["message_count"] += 1
                ch["total_message_sent"] += 1
        self.gateway.dispatch_message("MESSAGE_CREATE", self.gateway_message(msg))
        self.coze.on_message(msg)

    def gateway_message(self, msg: dict) -> dict:
        d = copy.deepcopy(msg)
        gid = (self.channels.get(msg["channel_id"]) or {}).get("guild_id", self.cfg.guild_id)
        if gid is None:  # a DM: no guild, no member objects
            return d
        d["guild_id"] = gid
        if gid != self.cfg.guild_id:
            return d
        d["member"] = self.member(msg["author"]["id"], with_user=False)
        for u in d["mentions"]:
            if u["id"] in self.users:
                u["member"] = self.member(u["id"], with_user=False)
        return d

    def update_message(self, message_id: str, changes: dict, *, dispatch: bool = True, payload: dict | None = None) -> dict | None:
        """Apply changes to a stored message; dispatch MESSAGE_UPDATE (full message, or `payload`)."""
        msg = self.msg_index.get(message_id)
        if msg is None or msg["channel_id"] not in self.channels:
            return None
        msg.update(copy.deepcopy(changes))
        if dispatch:
            self.gateway.dispatch_message("MESSAGE_UPDATE", payload if payload is not None else self.gateway_message(msg))
        return msg

    def list_messages(self, channel_id: str, limit: int = 50, before: str | None = None, after: str | None = None, around: str | None = None) -> list[dict]:
        self.get_channel(channel_id)
        msgs = self.messages.get(channel_id, [])
        if around:
            idx = [i for i, m in enumerate(msgs) if int(m["id"]) <= int(around)]
            center = idx[-1] if idx else 0
            lo = max(0, center - limit // 2)
            sel = msgs[lo : lo + limit]
        elif after:
            sel = [m for m in msgs if int(m["id"]) > int(after)][:limit]
        else:
            sel = [m for m in msgs if before is None or int(m["id"]) < int(before)][-limit:]
        return [copy.deepcopy(m) for m in reversed(sel)]

    # ------------------------------------------------------------------ inspection
    def snapshot(self, what: str, arg: str | None = None) -> Any:
        if what == "channels":  # the proxy's server only
            return copy.deepcopy(self.guild_channels())
        if what == "all_channels":  # also the other server's and the DM
            return copy.deepcopy(list(self.channels.values()))
        if what == "created":
            return copy.deepcopy(self.created)
        if what == "deleted":
            return copy.deepcopy(self.deleted)
        if what == "messages":
            return copy.deepcopy(self.messages.get(str(arg), []))
        if what == "request_log":
            return copy.deepcopy(self.request_log)
        raise KeyError(what)

    def info(self) -> dict:
        cfg = self.cfg
        return {
            "base_url": f"{self.root_url}/api/v10",
            "url": self.root_url,
            "gateway_url": self.gateway_url,
            "guild_id": cfg.guild_id,
            "channel_id": cfg.channel_id,
            "bot_token": cfg.bot_token,
            "bot_user_id": cfg.bot_user_id,
            "application_id": cfg.application_id,
            "coze_bot_ids": list(cfg.coze_bot_ids),
            "user_tokens": dict(cfg.user_tokens),
        }
