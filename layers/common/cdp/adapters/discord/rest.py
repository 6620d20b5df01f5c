"""Discord REST client (httpx): bot-token calls for the CDP bot, user-token calls for prompts.

* Every URL is `api_base + path` (DISCORD_API_BASE; tests point it at the fake Discord).
* Bot calls send `Authorization: Bot <token>`; user calls send the raw token with browser-like
  headers (Discord's web client).
* Rate limits follow Discord's headers (see ratelimit.py); 429s are waited out and retried.
* Messages are posted with a nonce and `enforce_nonce: true`, so a retry after a timeout / 5xx / 429
  can never post twice; those retries are bounded. Other non-GET calls are never retried blindly.
* Tokens never appear in a log line or an exception: fingerprints only.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from cdp.adapters.discord.ratelimit import RateLimiter
from cdp.domain.discord import (
    DEFAULT_USER_AGENT,
    DiscordError,
    DiscordRateLimited,
    DiscordUnavailable,
    error_from_response,
    new_nonce,
)
from cdp.domain.metrics import DISCORD_429
from cdp.domain.secrets import fingerprint, redact
from cdp.ports import NO_METRICS, Metrics, UploadFile

log = logging.getLogger("cdp.adapters.discord.rest")

DEFAULT_API_BASE = "https://discord.com/api/v10"
MAX_TRANSIENT_ATTEMPTS = 3  # total attempts for idempotent calls on 5xx / network errors
TRANSIENT_BACKOFF = 0.5  # seconds, doubled per attempt
# Discord's major parameters (rate limits are per channel / guild): the resource a route starts with
MAJOR_PREFIXES = (("/channels/{channel_id}", "channel_id"), ("/guilds/{guild_id}", "guild_id"))


class DiscordRest:
    def __init__(
        self,
        *,
        api_base: str = DEFAULT_API_BASE,
        bot_token: str,
        user_agent: str = DEFAULT_USER_AGENT,
        proxy_url: str | None = None,
        timeout: float = 30.0,
        max_rate_limit_wait: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        limiter: RateLimiter | None = None,
        transient_backoff: float = TRANSIENT_BACKOFF,
    ) -> None:
        self.api_base = api_base.rstrip("/")
        self._bot_token = (bot_token or "").strip()
        self.bot_fp = fingerprint(self._bot_token)
        self.user_agent = user_agent or DEFAULT_USER_AGENT
        self.limiter = limiter or RateLimiter(max_wait=max_rate_limit_wait)
        self._transient_backoff = transient_backoff
        self.metrics: Metrics = NO_METRICS  # the edge sets its own (429s by route)
        kwargs: dict[str, Any] = {"timeout": httpx.Timeout(timeout), "follow_redirects": False}
        if transport is not None:
            kwargs["transport"] = transport
        elif proxy_url:
            kwargs["proxy"] = proxy_url
        try:
            self._client = httpx.AsyncClient(**kwargs)
        except ImportError as exc:  # socks5:// without the socksio package
            raise RuntimeError(
                "PROXY_URL uses SOCKS: install the SOCKS extra (pip install 'httpx[socks]')"
            ) from exc
        proxy_password = urlsplit(proxy_url).password if proxy_url and transport is None else None
        self._secrets: tuple[str, ...] = (self._bot_token, *([proxy_password] if proxy_password else []))

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> DiscordRest:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- headers ------------------------------------------------------------------------------
    def _bot_headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bot {self._bot_token}",
            "User-Agent": "DiscordBot (https://github.com/deanxv/coze-discord-proxy, 5.0)",
        }

    def _user_headers(self, user_token: str) -> dict[str, str]:
        return {
            "Authorization": user_token.strip(),
            "User-Agent": self.user_agent,
            "Origin": "https://discord.com",
            "Referer": "https://discord.com/channels/@me",
            "X-Discord-Locale": "en-US",
            "Accept-Language": "en-US,en;q=0.9",
            "Accept": "*/*",
        }

    # -- core ---------------------------------------------------------------------------------
    async def _request(
        self,
        method: str,
        route: str,
        *,
        major: str | None = None,
        params: dict[str, Any] | None = None,
        token: str | None = None,
        user: bool = False,
        json_body: Any = None,
        files: Sequence[UploadFile] = (),
        query: dict[str, Any] | None = None,
        retry_transient: bool | None = None,
        reason: str | None = None,
        hide: tuple[str, ...] = (),
    ) -> Any:
        """`route` is the template ("/channels/{channel_id}/messages"); `params` fill it in.
        `major`: the rate-limit major parameter, by default the channel or guild the route starts with.
        `hide`: further secrets in the path (an interaction token), never logged."""
        token = (token if token is not None else self._bot_token).strip()
        fp = fingerprint(token)
        secrets_ = (*self._secrets, token, *hide)
        params = params or {}
        path = route.format(**params)
        if major is None:
            major = next((str(params[name]) for prefix, name in MAJOR_PREFIXES if route.startswith(prefix)), "")
        url = self.api_base + path
        route_key = f"{method} {route}"
        headers = self._user_headers(token) if user else self._bot_headers()
        if reason:
            headers["X-Audit-Log-Reason"] = reason
        if retry_transient is None:
            retry_transient = method == "GET"

        data: dict[str, str] | None = None
        multipart: list[tuple[str, tuple[str, bytes, str]]] | None = None
        body_json: Any = None
        if files:
            payload = dict(json_body or {})
            payload["attachments"] = [{"id": i, "filename": f.filename} for i, f in enumerate(files)]
            data = {"payload_json": json.dumps(payload)}
            multipart = [
                (f"files[{i}]", (f.filename, f.content, f.content_type)) for i, f in enumerate(files)
            ]
        elif json_body is not None:
            body_json = json_body

        async def send() -> httpx.Response:
            resp = await self._client.request(
                method, url, headers=headers, params=query, json=body_json, data=data, files=multipart
            )
            if resp.status_code == 429:
                self.metrics.inc(DISCORD_429, route=route_key)
            return resp

        attempt = 0
        while True:
            attempt += 1
            try:
                resp = await self.limiter.run(fp, route_key, major, send, body_of=_json_or_none)
            except DiscordRateLimited as exc:
                exc.after_retry = attempt > 1
                raise
            except httpx.TimeoutException as exc:
                err: DiscordError = DiscordUnavailable(
                    f"timeout ({type(exc).__name__})", route=route_key, token_fp=fp
                )
            except httpx.HTTPError as exc:
                err = DiscordUnavailable(
                    redact(f"network error: {type(exc).__name__}: {exc}", *secrets_),
                    route=route_key,
                    token_fp=fp,
                )
            else:
                if resp.status_code < 300:
                    log.debug("%s %s -> %s [%s]", method, redact(path, *secrets_), resp.status_code, fp)
                    if resp.status_code == 204 or not resp.content:
                        return None
                    try:
                        return resp.json()
                    except ValueError:
                        return resp.text
                body = _json_or_none(resp)
                if body is None:
                    body = resp.text
                err = error_from_response(
                    resp.status_code, body, route=route_key, token_fp=fp, secrets=secrets_
                )
                if resp.status_code == 429 and err.retry_after is None:
                    ra = resp.headers.get("Retry-After")
                    try:
                        err.retry_after = float(ra) if ra else None
                    except ValueError:
                        pass
                    err.message = err.message or "rate limited"
            transient = isinstance(err, DiscordUnavailable)
            if transient and retry_transient and attempt < MAX_TRANSIENT_ATTEMPTS:
                delay = self._transient_backoff * (2 ** (attempt - 1))
                log.warning(
                    "%s %s failed (%s); retry %d in %.2fs [%s]",
                    method,
                    route,
                    err.message,
                    attempt,
                    delay,
                    fp,
                )
                await asyncio.sleep(delay)
                continue
            level = logging.WARNING if err.status and err.status < 500 else logging.ERROR
            log.log(level, "%s", err)
            err.after_retry = attempt > 1  # an earlier attempt failed ambiguously: it may have been done
            raise err

    # -- bot-token calls ----------------------------------------------------------------------
    async def get_gateway_bot(self) -> dict:
        return await self._request("GET", "/gateway/bot")

    async def get_current_user(self, user_token: str | None = None) -> dict:
        if user_token is None:
            return await self._request("GET", "/users/@me")
        return await self._request("GET", "/users/@me", token=user_token, user=True)

    async def get_application(self) -> dict:
        return await self._request("GET", "/applications/@me")

    async def get_guild(self, guild_id: str) -> dict:
        return await self._request("GET", "/guilds/{guild_id}", params={"guild_id": guild_id})

    async def list_guild_channels(self, guild_id: str) -> list[dict]:
        return await self._request("GET", "/guilds/{guild_id}/channels", params={"guild_id": guild_id})

    async def get_guild_member(self, guild_id: str, user_id: str) -> dict:
        return await self._request("GET", "/guilds/{guild_id}/members/{user_id}",
                                   params={"guild_id": guild_id, "user_id": user_id})

    async def get_channel(self, channel_id: str) -> dict:
        return await self._request("GET", "/channels/{channel_id}", params={"channel_id": channel_id})

    async def create_channel(
        self, guild_id: str, name: str, type: int = 0, parent_id: str | None = None,
        permission_overwrites: Sequence[dict] | None = None,
    ) -> dict:
        body: dict[str, Any] = {"name": name, "type": type}
        if parent_id:
            body["parent_id"] = str(parent_id)
        if permission_overwrites:
            body["permission_overwrites"] = [dict(o) for o in permission_overwrites]
        return await self._request("POST", "/guilds/{guild_id}/channels", params={"guild_id": guild_id},
                                   json_body=body)

    async def set_channel_permission(
        self, channel_id: str, overwrite_id: str, allow: int, deny: int = 0, type: int = 1
    ) -> None:
        """PUT /channels/{id}/permissions/{overwrite_id} (idempotent: retried like a GET)."""
        await self._request("PUT", "/channels/{channel_id}/permissions/{overwrite_id}",
                            params={"channel_id": channel_id, "overwrite_id": overwrite_id},
                            json_body={"allow": str(int(allow)), "deny": str(int(deny)), "type": int(type)},
                            retry_transient=True)

    async def delete_channel(self, channel_id: str) -> dict:
        return await self._request("DELETE", "/channels/{channel_id}", params={"channel_id": channel_id})

    async def create_thread(
        self,
        channel_id: str,
        name: str,
        auto_archive_duration: int,
        message_id: str | None = None,
        type: int = 11,
    ) -> dict:
        body: dict[str, Any] = {"name": name, "auto_archive_duration": int(auto_archive_duration)}
        if message_id:
            return await self._request("POST", "/channels/{channel_id}/messages/{message_id}/threads",
                                       params={"channel_id": channel_id, "message_id": message_id},
                                       json_body=body)
        body["type"] = type
        return await self._request("POST", "/channels/{channel_id}/threads", params={"channel_id": channel_id},
                                   json_body=body)

    async def get_messages(
        self, channel_id: str, limit: int = 50, after: str | None = None, before: str | None = None
    ) -> list[dict]:
        query: dict[str, Any] = {"limit": max(1, min(100, int(limit)))}
        if after:
            query["after"] = str(after)
        if before:
            query["before"] = str(before)
        return await self._request("GET", "/channels/{channel_id}/messages", params={"channel_id": channel_id},
                                   query=query)

    async def send_bot_message(
        self, channel_id: str, content: str | None = None, files: Sequence[UploadFile] = ()
    ) -> dict:
        body: dict[str, Any] = {
            "allowed_mentions": {"parse": []},
            "nonce": new_nonce(),
            "enforce_nonce": True,
        }
        if content is not None:
            body["content"] = content
        return await self._post_message(channel_id, body, files)

    async def put_application_commands(
        self, application_id: str, commands: list[dict], guild_id: str | None = None
    ) -> list[dict]:
        """Bulk-overwrite the application's commands: in one guild, or global when guild_id is None."""
        if guild_id:
            return await self._request(
                "PUT", "/applications/{application_id}/guilds/{guild_id}/commands",
                params={"application_id": application_id, "guild_id": guild_id}, json_body=commands)
        return await self._request("PUT", "/applications/{application_id}/commands",
                                   params={"application_id": application_id}, json_body=commands)

    async def edit_original_interaction_response(
        self, application_id: str, interaction_token: str, body: dict
    ) -> dict:
        """PATCH the deferred response of an interaction (valid 15 minutes after the interaction)."""
        return await self._request(
            "PATCH", "/webhooks/{application_id}/{interaction_token}/messages/@original",
            major=f"{application_id}/{fingerprint(interaction_token)}",
            params={"application_id": application_id, "interaction_token": interaction_token},
            json_body=body, hide=(interaction_token,))

    # -- user-token calls ---------------------------------------------------------------------
    async def send_user_message(
        self,
        user_token: str,
        channel_id: str,
        content: str,
        *,
        nonce: str,
        allowed_user_ids: Sequence[str],
        files: Sequence[UploadFile] = (),
    ) -> dict:
        """Post `content` as the Discord user. Idempotent per `nonce` (enforce_nonce), so retried safely."""
        body: dict[str, Any] = {
            "content": content,
            "nonce": str(nonce),
            "enforce_nonce": True,
            "tts": False,
            "flags": 0,
            "allowed_mentions": {"parse": [], "users": [str(u) for u in allowed_user_ids]},
        }
        return await self._post_message(channel_id, body, files, token=user_token, user=True)

    async def _post_message(self, channel_id: str, body: dict[str, Any], files: Sequence[UploadFile],
                            *, token: str | None = None, user: bool = False) -> dict:
        """POST a message; `body` carries a nonce with enforce_nonce, so transient failures are retried."""
        return await self._request("POST", "/channels/{channel_id}/messages", params={"channel_id": channel_id},
                                   token=token, user=user, json_body=body, files=files, retry_transient=True)


def _json_or_none(resp: Any) -> Any:
    try:
        return resp.json()
    except Exception:
        return None
