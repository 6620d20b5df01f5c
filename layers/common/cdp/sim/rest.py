"""Discord REST API v10/v9 (the subset the proxy uses), plus attachment/CDN file serving."""

from __future__ import annotations

import asyncio
import copy
import email.parser
import email.policy
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .ratelimit import RateLimited
from .util import ApiError, fingerprint, form_error, tiny_png

VIEW = 1 << 10
SEND = 1 << 11
HISTORY = 1 << 16
MANAGE_CHANNELS = 1 << 4

if TYPE_CHECKING:
    from .core import Sim


class Ctx:
    def __init__(self, sim: Sim, request: Request, kind: str | None, user_id: str | None, token: str | None, version: int) -> None:
        self.sim = sim
        self.request = request
        self.kind = kind
        self.user_id = user_id
        self.token = token
        self.version = version
        self.body: Any = None
        self.files: list[tuple[int, str, str, bytes]] = []


Handler = Callable[..., Awaitable[Any]]
ROUTES: list[tuple[str, re.Pattern, str, Handler, bool]] = []  # method, regex, route key, handler, needs auth


def route(method: str, template: str, auth: bool = True) -> Callable[[Handler], Handler]:
    regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "/?$")

    def deco(fn: Handler) -> Handler:
        ROUTES.append((method, regex, f"{method} {template}", fn, auth))
        return fn

    return deco


def _qint(req: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = req.query_params.get(name)
    if raw is None:
        return default
    try:
        v = int(raw)
    except ValueError:
        raise form_error([name], "NUMBER_TYPE_COERCE", f"Value \"{raw}\" is not int.") from None
    if not lo <= v <= hi:
        raise form_error([name], "NUMBER_TYPE_MAX" if v > hi else "NUMBER_TYPE_MIN", f"int value should be between {lo} and {hi}.")
    return v


def _need_body(ctx: Ctx) -> dict:
    if not isinstance(ctx.body, dict):
        raise ApiError(400, 50109, "The request body contains invalid JSON.")
    return ctx.body


# ----------------------------------------------------------------------------- gateway / users / apps
@route("GET", "/gateway", auth=False)
async def get_gateway(ctx: Ctx) -> Any:
    return {"url": ctx.sim.gateway_url}


@route("GET", "/gateway/bot")
async def get_gateway_bot(ctx: Ctx) -> Any:
    if ctx.kind != "bot":
        raise ApiError(401, 0, "401: Unauthorized")
    return {
        "url": ctx.sim.gateway_url,
        "shards": 1,
        "session_start_limit": {
            "total": ctx.sim.cfg.session_start_total,
            "remaining": ctx.sim.session_start_remaining,
            "reset_after": int(max(0.0, 86400 - (time.time() - ctx.sim.started_at)) * 1000),
            "max_concurrency": 1,
        },
    }


@route("GET", "/users/@me")
async def get_me(ctx: Ctx) -> Any:
    u = copy.deepcopy(ctx.sim.users[ctx.user_id])
    u.update({"mfa_enabled": False, "locale": "en-US", "verified": ctx.token not in ctx.sim.unverified, "email": None, "premium_type": 0})
    if ctx.kind == "bot":
        u["bot"] = True
        u["bio"] = ""
    return u


@route("GET", "/users/{user_id}")
async def get_user(ctx: Ctx, user_id: str) -> Any:
    u = ctx.sim.users.get(user_id)
    if u is None:
        raise ApiError(404, 10013, "Unknown User")
    return copy.deepcopy(u)


@route("GET", "/oauth2/applications/@me")
async def get_app_oauth(ctx: Ctx) -> Any:
    if ctx.kind != "bot":
        raise ApiError(401, 0, "401: Unauthorized")
    return ctx.sim.application_object()


@route("GET", "/applications/@me")
async def get_app(ctx: Ctx) -> Any:
    if ctx.kind != "bot":
        raise ApiError(401, 0, "401: Unauthorized")
    return ctx.sim.application_object()


# ----------------------------------------------------------------------------- guilds
def _guild(ctx: Ctx, guild_id: str) -> None:
    if guild_id != ctx.sim.cfg.guild_id:
        raise ApiError(404, 10004, "Unknown Guild")
    if ctx.kind == "bot" and ctx.user_id in ctx.sim.non_members:
        raise ApiError(403, 50001, "Missing Access")


@route("GET", "/guilds/{guild_id}")
async def get_guild(ctx: Ctx, guild_id: str) -> Any:
    _guild(ctx, guild_id)
    g = ctx.sim.guild_object()
    if ctx.request.query_params.get("with_counts") == "true":
        g["approximate_member_count"] = len(ctx.sim.users)
        g["approximate_presence_count"] = 0
    return g


@route("GET", "/guilds/{guild_id}/channels")
async def get_guild_channels(ctx: Ctx, guild_id: str) -> Any:
    _guild(ctx, guild_id)
    return [copy.deepcopy(c) for c in ctx.sim.guild_channels() if c["type"] not in (10, 11, 12)]


@route("POST", "/guilds/{guild_id}/channels")
async def post_guild_channel(ctx: Ctx, guild_id: str) -> Any:
    if ctx.kind == "bot" and guild_id == ctx.sim.cfg.guild_id:
        _guild(ctx, guild_id)
        ctx.sim.require_permission(ctx.user_id or "", 1 << 4)  # MANAGE_CHANNELS
    return 201, copy.deepcopy(ctx.sim.create_channel(guild_id, _need_body(ctx), ctx.user_id or ""))


@route("GET", "/guilds/{guild_id}/members/{user_id}")
async def get_member(ctx: Ctx, guild_id: str, user_id: str) -> Any:
    _guild(ctx, guild_id)
    if user_id in ctx.sim.non_members:
        raise ApiError(404, 10007, "Unknown Member")
    if user_id not in ctx.sim.users:
        raise ApiError(404, 10013, "Unknown User") if not user_id.isdigit() else ApiError(404, 10007, "Unknown Member")
    return ctx.sim.member(user_id)


# ----------------------------------------------------------------------------- channels
@route("GET", "/channels/{channel_id}")
async def get_channel(ctx: Ctx, channel_id: str) -> Any:
    # 404 for unknown ids; 403 50001 for channels the token cannot see (another server, someone
    # else's DM, a private channel)
    return copy.deepcopy(ctx.sim.require_channel_permission(ctx.user_id or "", channel_id, 0))


@route("DELETE", "/channels/{channel_id}")
async def delete_channel(ctx: Ctx, channel_id: str) -> Any:
    ch = ctx.sim.require_channel_permission(ctx.user_id or "", channel_id, 0)
    if ch["type"] in (1, 3):
        raise ApiError(403, 50003, "Cannot execute action on a DM channel")
    if ch["type"] not in (10, 11, 12) and ch.get("guild_id") == ctx.sim.cfg.guild_id:
        ctx.sim.require_permission(ctx.user_id or "", MANAGE_CHANNELS)
    elif ch["type"] not in (10, 11, 12):
        ctx.sim.require_channel_permission(ctx.user_id or "", channel_id, MANAGE_CHANNELS)
    return copy.deepcopy(ctx.sim.delete_channel(channel_id))


@route("PUT", "/channels/{channel_id}/permissions/{overwrite_id}")
async def put_overwrite(ctx: Ctx, channel_id: str, overwrite_id: str) -> Any:
    ctx.sim.set_overwrite(ctx.user_id or "", channel_id, overwrite_id, _need_body(ctx))
    return 204, None


@route("POST", "/channels/{channel_id}/threads")
async def post_thread(ctx: Ctx, channel_id: str) -> Any:
    ctx.sim.require_channel_permission(ctx.user_id or "", channel_id, 0)
    return 201, copy.deepcopy(ctx.sim.create_thread(channel_id, _need_body(ctx), ctx.user_id or "", None))


@route("POST", "/channels/{channel_id}/messages/{message_id}/threads")
async def post_thread_from_message(ctx: Ctx, channel_id: str, message_id: str) -> Any:
    ctx.sim.require_channel_permission(ctx.user_id or "", channel_id, HISTORY)
    return 201, copy.deepcopy(ctx.sim.create_thread(channel_id, _need_body(ctx), ctx.user_id or "", message_id))


@route("GET", "/channels/{channel_id}/messages")
async def get_messages(ctx: Ctx, channel_id: str) -> Any:
    ctx.sim.require_channel_permission(ctx.user_id or "", channel_id, HISTORY)
    q = ctx.request.query_params
    limit = _qint(ctx.request, "limit", 50, 1, 100)
    return ctx.sim.list_messages(channel_id, limit, q.get("before"), q.get("after"), q.get("around"))


@route("GET", "/channels/{channel_id}/messages/{message_id}")
async def get_message(ctx: Ctx, channel_id: str, message_id: str) -> Any:
    ctx.sim.require_channel_permission(ctx.user_id or "", channel_id, HISTORY)
    m = ctx.sim.msg_index.get(message_id)
    if m is None or m["channel_id"] != channel_id:
        raise ApiError(404, 10008, "Unknown Message")
    return copy.deepcopy(m)


@route("DELETE", "/channels/{channel_id}/messages/{message_id}")
async def delete_message(ctx: Ctx, channel_id: str, message_id: str) -> Any:
    sim = ctx.sim
    sim.require_channel_permission(ctx.user_id or "", channel_id, 0)
    m = sim.msg_index.get(message_id)
    if m is None or m["channel_id"] != channel_id:
        raise ApiError(404, 10008, "Unknown Message")
    del sim.msg_index[message_id]
    sim.messages[channel_id] = [x for x in sim.messages.get(channel_id, []) if x["id"] != message_id]
    sim.gateway.dispatch_message("MESSAGE_DELETE", {"id": message_id, "channel_id": channel_id, "guild_id": sim.cfg.guild_id})
    return 204, None


@route("POST", "/channels/{channel_id}/messages")
async def post_message(ctx: Ctx, channel_id: str) -> Any:
    body = _need_body(ctx)
    ctx.sim.require_channel_permission(ctx.user_id or "", channel_id, SEND)
    msg, created = ctx.sim.post_message(channel_id, ctx.user_id or "", body, ctx.files)
    return 200, msg


# ----------------------------------------------------------------------------- application commands
_COMMAND_NAME = re.compile(r"^[-_\w]{1,32}$")


def _app(ctx: Ctx, application_id: str) -> None:
    if ctx.kind != "bot" or application_id != ctx.sim.cfg.application_id:
        raise ApiError(403, 20012, "You are not authorized to perform this action on this application")


def _check_command(cmd: Any, n: int) -> None:
    if not isinstance(cmd, dict):
        raise form_error([n], "MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
    name = cmd.get("name")
    if not isinstance(name, str) or not _COMMAND_NAME.match(name) or name != name.lower():
        raise form_error([n, "name"], "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
    ctype = cmd.get("type", 1)
    desc = cmd.get("description", "")
    if ctype == 1 and not (isinstance(desc, str) and 1 <= len(desc) <= 100):
        raise form_error([n, "description"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
    for i, opt in enumerate(cmd.get("options") or []):
        if not isinstance(opt, dict) or opt.get("type") not in range(1, 12) or not _COMMAND_NAME.match(str(opt.get("name", ""))):
            raise form_error([n, "options", i], "APPLICATION_COMMAND_OPTION_INVALID", "Invalid option")
        if opt["type"] in (1, 2) and not (1 <= len(str(opt.get("description", ""))) <= 100):
            raise form_error([n, "options", i, "description"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")


def _put_commands(ctx: Ctx, scope: str) -> list[dict]:
    body = ctx.body
    if not isinstance(body, list):
        raise form_error([], "MODEL_TYPE_CONVERT", "Only iterables may be used in a ListType")
    if len(body) > 100:
        raise form_error([], "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
    out = []
    for n, cmd in enumerate(body):
        _check_command(cmd, n)
        out.append({"id": ctx.sim.ids.next(), "application_id": ctx.sim.cfg.application_id, "version": ctx.sim.ids.next(),
                    "type": cmd.get("type", 1), "default_member_permissions": cmd.get("default_member_permissions"),
                    **({"guild_id": scope} if scope != "global" else {}), **copy.deepcopy(cmd)})
    ctx.sim.commands[scope] = out
    return copy.deepcopy(out)


@route("PUT", "/applications/{application_id}/commands")
async def put_global_commands(ctx: Ctx, application_id: str) -> Any:
    _app(ctx, application_id)
    return _put_commands(ctx, "global")


@route("GET", "/applications/{application_id}/commands")
async def get_global_commands(ctx: Ctx, application_id: str) -> Any:
    _app(ctx, application_id)
    return copy.deepcopy(ctx.sim.commands.get("global", []))


@route("PUT", "/applications/{application_id}/guilds/{guild_id}/commands")
async def put_guild_commands(ctx: Ctx, application_id: str, guild_id: str) -> Any:
    _app(ctx, application_id)
    _guild(ctx, guild_id)
    return _put_commands(ctx, guild_id)


@route("GET", "/applications/{application_id}/guilds/{guild_id}/commands")
async def get_guild_commands(ctx: Ctx, application_id: str, guild_id: str) -> Any:
    _app(ctx, application_id)
    _guild(ctx, guild_id)
    return copy.deepcopy(ctx.sim.commands.get(guild_id, []))


# ----------------------------------------------------------------------------- interaction webhooks
def _interaction(ctx: Ctx, application_id: str, token: str) -> dict:
    it = ctx.sim.interactions.get(token)
    if it is None or it["application_id"] != application_id or time.time() - it["_at"] > 15 * 60:
        raise ApiError(404, 10015, "Unknown Webhook")
    return it


@route("PATCH", "/webhooks/{application_id}/{token}/messages/@original", auth=False)
async def patch_original(ctx: Ctx, application_id: str, token: str) -> Any:
    it = _interaction(ctx, application_id, token)
    body = _need_body(ctx)
    content = body.get("content")
    if content is not None and (not isinstance(content, str) or len(content) > 2000):
        raise form_error(["content"], "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
    bot = ctx.sim.users[ctx.sim.cfg.bot_user_id]
    msg = {"id": it.get("_message_id") or ctx.sim.ids.next(), "type": 20, "channel_id": it["channel_id"],
           "author": copy.deepcopy(bot), "content": content or "", "embeds": body.get("embeds") or [],
           "flags": int(body.get("flags") or 0), "interaction_metadata": {"id": it["id"], "type": 2},
           "webhook_id": application_id, "application_id": application_id, "edited_timestamp": None}
    it["_message_id"] = msg["id"]
    ctx.sim.interaction_responses.append({"interaction_id": it["id"], "token": token, "body": copy.deepcopy(body),
                                          "at": time.time()})
    return msg


# ----------------------------------------------------------------------------- plumbing
def parse_multipart(content_type: str, data: bytes) -> tuple[dict, list[tuple[int, str, str, bytes]]]:
    raw = b"Content-Type: " + content_type.encode("latin-1") + b"\r\nMIME-Version: 1.0\r\n\r\n" + data
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    if not msg.is_multipart():
        raise ApiError(400, 50109, "The request body contains invalid JSON.")
    body: dict = {}
    files: list[tuple[int, str, str, bytes]] = []
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if name == "payload_json":
            try:
                body = json.loads(payload.decode("utf-8"))
            except ValueError:
                raise ApiError(400, 50109, "The request body contains invalid JSON.") from None
        elif name:
            m = re.fullmatch(r"files\[(\d+)\]|file(\d*)", name)
            if m:
                n = int(m.group(1) if m.group(1) is not None else (m.group(2) or 0))
                files.append((n, part.get_filename() or f"file{n}", part.get_content_type() or "application/octet-stream", payload))
            elif name == "content":
                body["content"] = payload.decode("utf-8")
    return body, files


def _log(sim: Sim, request: Request, status: int, body: Any, kind: str | None) -> None:
    headers = {}
    for k, v in request.headers.items():
        if k.lower() == "authorization":
            prefix = "Bot " if v.startswith("Bot ") else ("Bearer " if v.startswith("Bearer ") else "")
            v = prefix + (fingerprint(v[len(prefix):]) or "")
        headers[k] = v
    sim.request_log.append(
        {
            "at": time.time(),
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": headers,
            "auth_kind": kind,
            "json": body,
            "status": status,
        }
    )


def _match_fault(rules: list[dict], method: str, path: str) -> dict | None:
    for r in rules:
        if r["count"] > 0 and (r.get("method") in (None, "*", method)) and r["path"] in path:
            r["count"] -= 1
            if r["count"] <= 0:
                rules.remove(r)
            return r
    return None


async def handle_api(sim: Sim, request: Request) -> Response:
    full = request.url.path
    m = re.match(r"^/api/v(\d+)(/.*)$", full)
    if not m or m.group(1) not in ("9", "10"):
        return JSONResponse({"message": "404: Not Found", "code": 0}, status_code=404)
    version, path = int(m.group(1)), m.group(2)
    method = request.method
    matched = None
    path_ok = False
    for rmethod, regex, key, fn, auth in ROUTES:
        mm = regex.match(path)
        if mm:
            path_ok = True
            if rmethod == method:
                matched = (key, fn, auth, mm.groupdict())
                break
    kind = user_id = token = None
    body_for_log: Any = None
    headers: dict[str, str] = {}
    try:
        if matched is None:
            if path_ok:
                raise ApiError(405, 0, "405: Method Not Allowed")
            raise ApiError(404, 0, "404: Not Found")
        key, fn, auth, params = matched
        if auth:
            kind, user_id, token = sim.authenticate(request.headers.get("authorization"))
            if kind == "user" and token in sim.unverified and method != "GET":
                raise ApiError(403, 40002, "You need to verify your account in order to perform this action.")
        ctx = Ctx(sim, request, kind, user_id, token, version)
        raw = await request.body()
        ctype = request.headers.get("content-type", "")
        if raw:
            if ctype.startswith("multipart/form-data"):
                ctx.body, ctx.files = parse_multipart(ctype, raw)
            else:
                try:
                    ctx.body = json.loads(raw)
                except ValueError:
                    raise ApiError(400, 50109, "The request body contains invalid JSON.") from None
        elif method in ("POST", "PATCH", "PUT"):
            ctx.body = {}
        body_for_log = ctx.body
        if ctx.files:
            body_for_log = {"payload_json": ctx.body, "files": [{"n": f[0], "filename": f[1], "content_type": f[2], "size": len(f[3])} for f in ctx.files]}
        fault = _match_fault(sim.fail_rules, method, path)
        if fault is not None:
            raise ApiError(fault["status"], fault["code"], fault["message"])
        inj = _match_fault(sim.inject_rules, method, path)
        major = params.get("channel_id") or params.get("guild_id") or ""
        if inj is not None:
            limit, per = sim.ratelimiter.limits_for(key)
            rl_headers = {} if inj["global"] else sim.ratelimiter._headers(limit, 0, time.time() + inj["retry_after"], time.time(), sim.ratelimiter.bucket_hash(key, limit, per))
            raise RateLimited(inj["retry_after"], inj["global"], inj.get("scope") or ("global" if inj["global"] else "user"), rl_headers)
        headers = sim.ratelimiter.check(token, key, major)
        result = await fn(ctx, **params)
        late = _match_fault(sim.accept_then_fail_rules, method, path)
        if late is not None:  # done (a message is stored), but the caller is told it failed, late
            await asyncio.sleep(late["delay"])
            raise ApiError(late["status"], late["code"], late["message"])
        status = 200
        if isinstance(result, tuple):
            status, result = result
        _log(sim, request, status, body_for_log, kind)
        if status == 204:
            return Response(status_code=204, headers=headers)
        return JSONResponse(result, status_code=status, headers=headers)
    except RateLimited as e:
        _log(sim, request, 429, body_for_log, kind)
        return JSONResponse(e.body(), status_code=429, headers=e.all_headers())
    except ApiError as e:
        _log(sim, request, e.status, body_for_log, kind)
        return JSONResponse(e.body(), status_code=e.status, headers=headers)


async def handle_attachment(sim: Sim, request: Request) -> Response:
    p = request.path_params
    hit = sim.attachments.get((p["channel_id"], p["attachment_id"], p["filename"]))
    if hit is None:
        return Response("Not Found", status_code=404, media_type="text/plain")
    return Response(hit[0], media_type=hit[1])


async def handle_cdn(sim: Sim, request: Request) -> Response:
    name = request.path_params["name"]
    if not name.endswith(".png"):
        return Response("Not Found", status_code=404, media_type="text/plain")
    seed = sum(name.encode()) % 256
    return Response(tiny_png(seed, 255 - seed, 128), media_type="image/png")
