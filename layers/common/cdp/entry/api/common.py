"""What every router shares: the runtime, JSON bodies, the `out-time` header, the key check, and
turning validation errors and Coze's error texts into OpenAI errors."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request

from cdp.domain.coze import CozeError, CozeErrorKind
from cdp.entry.api.runtime import Runtime
from cdp.entry.openai import errors as oe
from cdp.settings import MAX_REQUEST_SECONDS

BEARER = "bearer"  # a KeyCheck source: `Authorization: Bearer <key>`


def runtime_of(request: Request) -> Runtime:
    """The Runtime create_app stored on the app."""
    return request.app.state.runtime


CHAT, CREATE, ADMIN = "chat", "create", "admin"  # what a KeyCheck guards (its `level`)


class KeyCheck:
    """The one key check, a FastAPI dependency. Two key lists: PROXY_SECRET's (chat keys) and
    PROXY_ADMIN_SECRET's (admin keys), both comma-separated.

    `level` says what the route does:
    - CHAT (the OpenAI API): a chat or admin key; with no PROXY_SECRET the API is open.
    - CREATE (the original's create routes): a chat or admin key, and never without one: with no key
      configured at all, refused.
    - ADMIN (deletion, /api/status: what changes or reveals state): an admin key; without
      PROXY_ADMIN_SECRET a chat key, as before; with no key configured at all, refused. A chat key
      while admin keys are set is refused with 403.
    `sources` are read in order, the first non-empty one is the caller's key: BEARER or a header name.
    `refuse(status, why)` builds the exception for a missing or wrong key (each API family keeps its
    error shape). Returns the caller's key, which also selects bot_config.json entries (sent without
    keys set too).
    """

    def __init__(self, *sources: str, refuse: Callable[[int, str], Exception], level: str = CHAT) -> None:
        if level not in (CHAT, CREATE, ADMIN):
            raise ValueError(f"unknown key level {level!r}")
        self.sources = sources
        self.refuse = refuse
        self.level = level

    async def __call__(self, request: Request) -> str | None:
        # async on purpose: FastAPI runs a sync dependency in a worker thread, a hop per request
        return self.check(request)

    def check(self, request: Request) -> str | None:
        """The caller's key, or the `refuse` exception; see the class docstring."""
        given = next(filter(None, (self._read(request, s) for s in self.sources)), "")
        settings = runtime_of(request).settings
        chat, admin = settings.api_keys, settings.admin_keys
        if self.level == CHAT and not chat:
            return given or None  # open API (cdp serve refuses this beyond loopback unless ALLOW_OPEN_API)
        if not chat and not admin:
            raise self.refuse(401, "This route needs a key and none is configured: set PROXY_SECRET "
                                   "(or PROXY_ADMIN_SECRET for the admin routes) and send one of its keys.")
        if self.level == ADMIN and admin:
            if _matches(given, admin):
                return given
            if _matches(given, chat):
                raise self.refuse(403, "This key may not use this route: it needs one of PROXY_ADMIN_SECRET's "
                                       "keys.")
            raise self.refuse(401, "Incorrect or missing admin key: send one of PROXY_ADMIN_SECRET's keys.")
        if not _matches(given, [*chat, *admin]):
            raise self.refuse(401, "Incorrect or missing API key: send one of PROXY_SECRET's keys.")
        return given

    @staticmethod
    def _read(request: Request, source: str) -> str:
        if source != BEARER:
            return request.headers.get(source, "").strip()
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""


def _matches(given: str, keys: list[str]) -> bool:
    """Compare with every key (no early exit) so timing says nothing about which one matched."""
    matched = [hmac.compare_digest(given.encode(), k.encode()) for k in keys]
    return bool(given) and any(matched)


def openai_refusal(status: int, why: str) -> oe.OpenAIError:
    """A refused key on the OpenAI-shaped routes: 401 invalid_api_key, or 403 for a chat key on an admin route."""
    if status == 401 and why.startswith("Incorrect or missing API key"):
        return oe.invalid_api_key()
    return oe.OpenAIError(status, why, code="invalid_api_key" if status == 401 else "admin_key_required")


# The OpenAI routes take the key as a bearer token; /api/status (an admin route) also as `proxy-secret`.
openai_key = KeyCheck(BEARER, refuse=openai_refusal)
operator_key = KeyCheck(BEARER, "proxy-secret", refuse=openai_refusal, level=ADMIN)
ApiKey = Annotated[str | None, Depends(openai_key)]


class BodyTooLarge(Exception):
    """The request body is over the route's limit (each API family answers 413 in its own shape)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"The request body is over {limit} bytes.")
        self.limit = limit


class BodyTooDeep(ValueError):
    """The JSON body nests deeper than JSON_MAX_DEPTH (or Python's recursion limit)."""


# Deeper JSON is refused with a 400: no OpenAI or Discord body nests beyond a dozen levels, and
# deeper values make recursive code (validation, logging, json.dumps) fail with RecursionError.
JSON_MAX_DEPTH = 64
# Bodies larger than this are parsed in a worker thread, so a big body does not stall other requests.
PARSE_IN_THREAD_BYTES = 256 * 1024


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, or BodyTooLarge as soon as it is known to exceed `limit` bytes: from
    Content-Length before anything is read, else while reading (never more than `limit` + a chunk)."""
    length = request.headers.get("content-length", "").strip()
    if length.isdigit() and int(length) > limit:
        raise BodyTooLarge(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(limit)
    return bytes(body)


def _depth_ok(value: Any, limit: int) -> bool:
    """True if `value` nests at most `limit` containers deep (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return False
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return True


def parse_json(raw: bytes, max_depth: int = JSON_MAX_DEPTH) -> Any:
    """json.loads that raises BodyTooDeep for JSON nested over `max_depth` (also when the parser itself
    gives up with RecursionError), ValueError (UnicodeDecodeError, JSONDecodeError) otherwise."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise BodyTooDeep(f"the JSON nests deeper than {max_depth} levels") from None
    if not _depth_ok(value, max_depth):
        raise BodyTooDeep(f"the JSON nests deeper than {max_depth} levels")
    return value


async def json_body(request: Request) -> dict[str, Any]:
    """The body as a JSON object, or an OpenAI error that says what is wrong with it: 413 over the
    body limit (REQUEST_MAX_BODY_BYTES), before anything is parsed; 400 for empty, malformed or too
    deeply nested JSON (JSON_MAX_DEPTH) and for anything but an object."""
    limit = runtime_of(request).settings.max_body_bytes
    try:
        raw = await read_body(request, limit)
    except BodyTooLarge:
        raise oe.OpenAIError(413, f"The request body is over {limit} bytes (REQUEST_MAX_BODY_BYTES).",
                             code="request_too_large") from None
    if not raw.strip():
        raise oe.invalid_request("The request body is empty; send a JSON object.")
    try:
        body = await asyncio.to_thread(parse_json, raw) if len(raw) > PARSE_IN_THREAD_BYTES else parse_json(raw)
    except BodyTooDeep as exc:
        raise oe.invalid_request(f"The request body is not accepted: {exc}.") from None
    except ValueError as exc:  # UnicodeDecodeError, json.JSONDecodeError
        raise oe.invalid_request(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise oe.invalid_request("The request body must be a JSON object.")
    return body


def out_time(request: Request) -> float | None:
    """The `out-time` header (seconds, 0 < t <= MAX_REQUEST_SECONDS): overrides the settings' timeouts."""
    raw = request.headers.get("out-time")
    if raw is None or raw.strip() == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise oe.invalid_request("Header out-time must be a number of seconds.", param="out-time") from None
    if not 0 < value <= MAX_REQUEST_SECONDS:
        raise oe.invalid_request(f"Header out-time must be between 0 and {MAX_REQUEST_SECONDS} seconds.",
                                 param="out-time")
    return value


def validation_to_openai(exc: Exception) -> oe.OpenAIError:
    """A pydantic/FastAPI validation error as OpenAI's 400, naming the first wrong parameter."""
    errors = getattr(exc, "errors", lambda: [])()
    if not errors:
        return oe.invalid_request(str(exc))
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body",)]
    param = ".".join(loc) or None
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if first.get("type") == "missing":
        msg = f"Missing required parameter: '{param}'."
    elif param:
        msg = f"Invalid value for '{param}': {msg}"
    return oe.invalid_request(msg, param=param)


def coze_error_to_openai(err: CozeError) -> oe.OpenAIError:
    """Coze's own texts never reach the client as an error message (one-api reads words like 'credit')."""
    code = {CozeErrorKind.USER_LIMIT: "coze_account_limited", CozeErrorKind.BOT_LIMIT: "coze_bot_limited"}
    if err.kind in code:
        return oe.OpenAIError(503, err.public_message, type="server_error", code=code[err.kind],
                              headers={"Retry-After": "3600", "x-should-retry": "false"})
    return oe.upstream_error(err.public_message, code="coze_error", retry=False)
