"""The original coze-discord-proxy's /api routes (channels and threads), answered as the original does.

Every answer is HTTP 200 `{"success": true, "data"|"message": ...}` or `{"success": false,
"message": ...}` with the original's (Chinese) message texts, so clients written for it keep working;
failures add `detail`, an English explanation. A missing or wrong `proxy-secret` header is HTTP 401;
these routes never run without a key (none configured: 401 too). Creating takes a PROXY_SECRET or
PROXY_ADMIN_SECRET key; deleting takes a PROXY_ADMIN_SECRET key when that is set (a chat key: 403).
ONLY_OPENAI_API=1 leaves this router out (404).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from cdp.app.errors import ErrorKind, ServiceError
from cdp.domain.discord import CATEGORY_TYPES, DiscordError, is_snowflake
from cdp.entry.api.common import (
    ADMIN,
    CREATE,
    BodyTooDeep,
    BodyTooLarge,
    KeyCheck,
    parse_json,
    read_body,
    runtime_of,
)
from cdp.settings import SMALL_BODY_BYTES

log = logging.getLogger("cdp.entry.api.original")

MSG_UNAUTHORIZED = "无权进行此操作,未提供正确的 proxy-secret"
MSG_INVALID = "无效的参数"
MSG_CREATE_CHANNEL_FAILED = "discord创建频道异常"
MSG_DELETE_CHANNEL_FAILED = "discord删除频道异常"
MSG_DELETE_CHANNEL_OK = "discord删除频道成功"
MSG_THREAD_DURATION = "线程创建时间只可为[60,1440,4320,10080]"
MSG_CREATE_THREAD_FAILED = "discord创建线程异常"
ARCHIVE_DURATIONS = (60, 1440, 4320, 10080)


# -- bodies (as the original's model.ChannelReq / ThreadReq; absent fields are zero values) ---------
class ChannelCreateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: StrictStr = Field("", description="频道名称 / channel name")
    type: StrictInt = Field(0, description="类型 / type: 0 text channel, 4 category (Discord channel types)")
    parentId: StrictStr = Field("", description="父频道Id / category id; empty = top level")


class ThreadCreateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    channelId: StrictStr = Field("", description="频道Id / channel the thread is created in")
    name: StrictStr = Field("", description="线程名称 / thread name")
    archiveDuration: StrictInt = Field(0, description="线程存档时间[分钟] / auto-archive after 60, 1440, "
                                                      "4320 or 10080 minutes")


class IdName(BaseModel):
    id: str
    name: str


class DataResponse(BaseModel):
    success: bool = True
    data: IdName


class MessageResponse(BaseModel):
    success: bool
    message: str
    detail: str | None = None


def _body_doc(model: type[BaseModel]) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": model.model_json_schema()}}}}


_AUTH_DOC = {"parameters": [{"name": "proxy-secret", "in": "header", "required": False,
                             "schema": {"type": "string"},
                             "description": "one of PROXY_SECRET's keys (deletion: of PROXY_ADMIN_SECRET's, "
                                            "when set)"}]}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": MessageResponse, "description": "wrong or missing proxy-secret, or no key configured"},
    403: {"model": MessageResponse, "description": "a chat key on a deletion route (PROXY_ADMIN_SECRET is set)"}}


def fail(message: str, detail: str | None = None, status: int = 200) -> JSONResponse:
    body: dict[str, Any] = {"success": False, "message": message}
    if detail:
        body["detail"] = detail
    return JSONResponse(body, status_code=status)


class Refused(Exception):
    """A wrong or missing proxy-secret, raised by the key check; answered as the original does."""

    def __init__(self, status: int = 401, why: str = "") -> None:
        super().__init__(why)
        self.status = status
        self.why = why

    def response(self) -> JSONResponse:
        detail = "send one of PROXY_SECRET's keys in the header proxy-secret"
        if self.why and not self.why.startswith("Incorrect or missing API key"):
            detail = f"{self.why} (header proxy-secret)"
        return fail(MSG_UNAUTHORIZED, detail, status=self.status)


original_key = KeyCheck("proxy-secret", refuse=Refused, level=CREATE)  # create a channel or thread
original_admin_key = KeyCheck("proxy-secret", refuse=Refused, level=ADMIN)  # delete channels


def ok(**body: Any) -> JSONResponse:
    return JSONResponse({"success": True, **body})


def _discord_detail(exc: DiscordError) -> str:
    code = f", code {exc.code}" if exc.code is not None else ""
    return f"Discord answered HTTP {exc.status or 'none'}{code}: {exc.message}"


def refused(message: str, err: ServiceError) -> JSONResponse:
    """A channel id the routes may not act on (not a text channel or thread of GUILD_ID), in the
    original's body: 404 when the bot cannot see it, 403 when it is of another server, a DM or of the
    wrong type; Discord failing while asked: 503 / 502. Nothing was created or deleted."""
    if err.kind is ErrorKind.INVALID_REQUEST:
        status = 404 if err.code == "channel_not_found" else 403
    else:
        status = 503 if err.kind is ErrorKind.UNAVAILABLE else 502
    return fail(message, err.message, status=status)


async def _parse(request: Request, model: type[BaseModel]) -> BaseModel | JSONResponse:
    try:
        raw = await read_body(request, SMALL_BODY_BYTES)
    except BodyTooLarge as exc:
        return fail(MSG_INVALID, str(exc), status=413)
    try:
        data = parse_json(raw) if raw.strip() else None
    except BodyTooDeep as exc:
        return fail(MSG_INVALID, f"the body is not accepted: {exc}")
    except ValueError as exc:  # UnicodeDecodeError, json.JSONDecodeError
        return fail(MSG_INVALID, f"the body is not valid JSON: {exc}")
    if not isinstance(data, dict):
        return fail(MSG_INVALID, "the body must be a JSON object")
    data = {k: v for k, v in data.items() if v is not None}  # JSON null = absent, as in Go
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err.get("loc", ())) or "body"
        return fail(MSG_INVALID, f"field {field}: {err.get('msg', 'invalid value')}")


def install(app: FastAPI) -> None:
    """Called by create_app unless ONLY_OPENAI_API: the routes, and the original's 401 body."""

    async def refused(request: Request, exc: Refused) -> JSONResponse:
        return exc.response()

    app.add_exception_handler(Refused, refused)
    app.include_router(build_router())


def build_router() -> APIRouter:
    router = APIRouter(prefix="/api", tags=["original api"], responses=_RESPONSES)
    create, delete = [Depends(original_key)], [Depends(original_admin_key)]
    runtime = runtime_of  # the routes below read settings and service from it

    @router.post("/channel/create", summary="创建频道 / create a channel", dependencies=create,
                 responses={200: {"model": DataResponse | MessageResponse}},
                 openapi_extra={**_body_doc(ChannelCreateRequest), **_AUTH_DOC})
    async def channel_create(request: Request):
        req = await _parse(request, ChannelCreateRequest)
        if isinstance(req, JSONResponse):
            return req
        assert isinstance(req, ChannelCreateRequest)
        if req.parentId and not is_snowflake(req.parentId):
            return fail(MSG_CREATE_CHANNEL_FAILED, "parentId must be a Discord channel id (15-21 digits)")
        rt = runtime(request)
        if req.parentId:
            try:
                await rt.service.guild_channels.require(req.parentId, what="parentId", param="parentId",
                                                        types=CATEGORY_TYPES, kind="a category")
            except ServiceError as err:
                return refused(MSG_CREATE_CHANNEL_FAILED, err)
        try:
            channel = await rt.service.rest.create_channel(rt.settings.GUILD_ID, req.name, type=req.type,
                                                           parent_id=req.parentId or None)
        except DiscordError as exc:
            log.warning("channel create failed", extra={"status": exc.status, "code": exc.code})
            return fail(MSG_CREATE_CHANNEL_FAILED, _discord_detail(exc))
        return ok(data={"id": channel["id"], "name": req.name})

    @router.get("/channel/del/all/cdp", summary="删除全部CDP临时频道[谨慎调用] / delete every cdp-chat-* channel",
                dependencies=delete,
                responses={200: {"model": MessageResponse}}, openapi_extra=_AUTH_DOC)
    async def channel_del_all(request: Request):
        rt = runtime(request)
        try:
            deleted, failed = await rt.service.keeper.delete_all()
        except DiscordError as exc:
            return fail(MSG_DELETE_CHANNEL_FAILED, _discord_detail(exc))
        if failed:
            return fail(MSG_DELETE_CHANNEL_FAILED, f"{failed} channel(s) could not be deleted "
                                                   f"({deleted} deleted); see the log")
        return ok(message=MSG_DELETE_CHANNEL_OK)

    @router.get("/channel/del/{id}", summary="删除频道 / delete a channel", dependencies=delete, responses={200: {"model": MessageResponse}},
                openapi_extra=_AUTH_DOC)
    async def channel_del(id: str, request: Request):
        if not is_snowflake(id):
            return fail(MSG_DELETE_CHANNEL_FAILED, "the id must be a Discord channel id (15-21 digits)")
        rt = runtime(request)
        try:  # only text channels and threads of GUILD_ID: never another server's, a DM, a category
            await rt.service.guild_channels.require(id, what="id", param="id")
        except ServiceError as err:
            return refused(MSG_DELETE_CHANNEL_FAILED, err)
        try:
            await rt.service.rest.delete_channel(id)
        except DiscordError as exc:
            return fail(MSG_DELETE_CHANNEL_FAILED, _discord_detail(exc))
        finally:
            rt.service.guild_channels.forget(id)
        try:
            await rt.service.channels.remove(id)  # if it was one of ours, the registry forgets it
        except Exception:  # noqa: BLE001 - the store is down: the sweep catches it, answer anyway
            log.warning("could not remove a deleted channel from the registry", extra={"channel_id": id})
        return ok(message=MSG_DELETE_CHANNEL_OK)

    @router.post("/thread/create", summary="创建线程 / create a thread", dependencies=create, responses={200: {"model": DataResponse | MessageResponse}},
                 openapi_extra={**_body_doc(ThreadCreateRequest), **_AUTH_DOC})
    async def thread_create(request: Request):
        req = await _parse(request, ThreadCreateRequest)
        if isinstance(req, JSONResponse):
            return req
        assert isinstance(req, ThreadCreateRequest)
        if req.archiveDuration not in ARCHIVE_DURATIONS:
            return fail(MSG_THREAD_DURATION, "archiveDuration must be 60, 1440, 4320 or 10080 (minutes)")
        if not is_snowflake(req.channelId):
            return fail(MSG_CREATE_THREAD_FAILED, "channelId must be a Discord channel id (15-21 digits)")
        rt = runtime(request)
        try:
            await rt.service.guild_channels.require(req.channelId)
        except ServiceError as err:
            return refused(MSG_CREATE_THREAD_FAILED, err)
        try:
            thread = await rt.service.rest.create_thread(req.channelId, req.name, req.archiveDuration, type=11)
        except DiscordError as exc:
            return fail(MSG_CREATE_THREAD_FAILED, _discord_detail(exc))
        return ok(data={"id": thread["id"], "name": req.name})

    return router


def install_swagger(app) -> None:
    """The original served its API documentation under /swagger/ (swaggo): the same here, a Swagger
    UI page on FastAPI's OpenAPI document (/openapi.json), plus /swagger/doc.json."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import RedirectResponse

    @app.get("/swagger/index.html", include_in_schema=False)
    async def swagger_index():
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json",
                                   title=f"{app.title} - Swagger UI")

    @app.get("/swagger/doc.json", include_in_schema=False)
    async def swagger_doc():
        return JSONResponse(app.openapi())

    @app.get("/swagger", include_in_schema=False)
    @app.get("/swagger/", include_in_schema=False)
    async def swagger_root():
        return RedirectResponse("/swagger/index.html")
