"""Discord REST API v10/v9 (the subset the proxy uses), plus attachment/CDN file serving."""

from __future__ import annotations

import copy
import email.parser
import email.policy
import json
import re
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .ratelimit import RateLimited
from .util import ApiError, fingerprint, form_error, tiny_png

if TYPE_CHECKING:
    from .core import Sim


class Ctx:
    def __init__(self, sim: "Sim", request: Request, kind: str | None, user_id: str | None, token: str | None, version: int) -> None:
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
    return [copy.deepcopy(c) for c in ctx.sim.channels.values() if c["type"] not in (10, 11, 12)]


@route("POST", "/guilds/{guild_id}/channels")
async def post_guild_channel(ctx: Ctx, guild_id: str) -> Any:
    return 201, copy.deepcopy(ctx.sim.create_channel(guild_id, _need_body(ctx)))


@route("GET", "/guilds/{guild_id}/members/{user_id}")
async def get_member(ctx: Ctx, guild_id: str, user_id: str) -> Any:
    _guild(ctx, guild_id)
    if user_id not in ctx.sim.users:
        raise ApiError(404, 10013, "Unknown User") if not user_id.isdigit() else ApiError(404, 10007, "Unknown Member")
    return ctx.sim.member(user_id)


# ----------------------------------------------------------------------------- channels
@route("GET", "/channels/{channel_id}")
async def get_channel(ctx: Ctx, channel_id: str) -> Any:
    return copy.deepcopy(ctx.sim.get_channel(channel_id))


@route("DELETE", "/channels/{channel_id}")
async def delete_channel(ctx: Ctx, channel_id: str) -> Any:
    return copy.deepcopy(ctx.sim.delete_channel(channel_id))


@route("POST", "/channels/{channel_id}/threads")
async def post_thread(ctx: Ctx, channel_id: str) -> Any:
    return 201, copy.deepcopy(ctx.sim.create_thread(channel_id, _need_body(ctx), ctx.user_id or "", None))


@route("POST", "/channels/{channel_id}/messages/{message_id}/threads")
async def post_thread_from_message(ctx: Ctx, channel_id: str, message_id: str) -> Any:
    return 201, copy.deepcopy(ctx.sim.create_thread(channel_id, _need_body(ctx), ctx.user_id or "", message_id))


@route("GET", "/channels/{channel_id}/messages")
async def get_messages(ctx: Ctx, channel_id: str) -> Any:
    q = ctx.request.query_params
    limit = _qint(ctx.request, "limit", 50, 1, 100)
    return ctx.sim.list_messages(channel_id, limit, q.get("before"), q.get("after"), q.get("around"))


@route("GET", "/channels/{channel_id}/messages/{message_id}")
async def get_message(ctx: Ctx, channel_id: str, message_id: str) -> Any:
    ctx.sim.get_channel(channel_id)
    m = ctx.sim.msg_index.get(message_id)
    if m is None or m["channel_id"] != channel_id:
        raise ApiError(404, 10008, "Unknown Message")
    return copy.deepcopy(m)


@route("DELETE", "/channels/{channel_id}/messages/{message_id}")
async def delete_message(ctx: Ctx, channel_id: str, message_id: str) -> Any:
    sim = ctx.sim
    sim.get_channel(channel_id)
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
    msg, created = ctx.sim.post_message(channel_id, ctx.user_id or "", body, ctx.files)
    return 200, msg


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


def _log(sim: "Sim", request: Request, status: int, body: Any, kind: str | None) -> None:
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


async def handle_api(sim: "Sim", request: Request) -> Response:
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


async def handle_attachment(sim: "Sim", request: Request) -> Response:
    p = request.path_params
    hit = sim.attachments.get((p["channel_id"], p["attachment_id"], p["filename"]))
    if hit is None:
        return Response("Not Found", status_code=404, media_type="text/plain")
    return Response(hit[0], media_type=hit[1])


async def handle_cdn(sim: "Sim", request: Request) -> Response:
    name = request.path_params["name"]
    if not name.endswith(".png"):
        return Response("Not Found", status_code=404, media_type="text/plain")
    seed = sum(name.encode()) % 256
    return Response(tiny_png(seed, 255 - seed, 128), media_type="image/png")
