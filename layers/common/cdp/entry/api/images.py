"""POST /v1/images/generations and GET /files/{name} (re-hosted images of the local blob store).

An image request is a conversation like a chat (same routing, channel, account, waiting and cleanup
in ConversationService) whose prompt is the drawing instruction + the caller's prompt. The images
of the reply (markdown links, embeds, attachments) are downloaded before the temporary channel goes
and re-hosted in the blob store, so the returned URLs outlive the channel and Discord's CDN expiry.

`n`: one conversation per requested image, run concurrently (a Coze bot draws one picture per
prompt); 1..IMAGES_MAX_N, more is a 400. If some of them fail, the images that did arrive are
returned; if none did, the first error is.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cdp.adapters.blobs import BlobStore, BlobStoreError, LocalBlobStore, make_blob_store
from cdp.adapters.media import DownloadBudget, ImageFetchError, fetch_image, http_client
from cdp.app import errors as se
from cdp.app.conversation import ChatSpec
from cdp.domain.discord import is_snowflake
from cdp.domain.images import drawing_prompt, extract_image_urls, revised_prompt
from cdp.entry.api.common import ApiKey, coze_error_to_openai, json_body, out_time, validation_to_openai
from cdp.entry.api.runtime import Runtime
from cdp.entry.openai import errors as oe
from cdp.entry.openai.wire import request_body_doc
from cdp.settings import Settings

log = logging.getLogger("cdp.entry.api.images")

MAX_PROMPT_CHARS = 4000  # dall-e-3's limit; longer prompts would be cut into several Discord messages


class ImagesRequest(BaseModel):
    """OpenAI's fields; size/quality/style/user are accepted and ignored (Coze decides)."""

    model_config = ConfigDict(extra="allow")
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS, json_schema_extra={"pattern": "\\S"})
    model: str | None = None
    n: int | None = Field(None, ge=1)
    size: str | None = None
    quality: str | None = None
    style: str | None = None
    user: str | None = None
    response_format: Literal["url", "b64_json"] | None = None
    channelId: str | None = Field(None, json_schema_extra={"pattern": "^([0-9]{15,21})?$"})

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("prompt must not be blank")
        return v

    @field_validator("channelId")
    @classmethod
    def _channel(cls, v: str | None) -> str | None:
        if v is not None and v != "" and not is_snowflake(v):
            raise ValueError("channelId must be a Discord channel id (15-21 digits)")
        return v or None


def _body_doc(settings: Settings) -> dict[str, Any]:
    """The request body for /openapi.json; `n` is bounded by IMAGES_MAX_N."""
    doc = request_body_doc(ImagesRequest, "OpenAI's image request (size, quality, style, user: accepted, ignored)")
    n = doc["requestBody"]["content"]["application/json"]["schema"]["properties"]["n"]
    for choice in n.get("anyOf", [n]):
        if choice.get("type") == "integer":
            choice["maximum"] = settings.IMAGES_MAX_N
    return doc


@dataclass
class Drawn:
    data: bytes
    mime: str


def build_router(runtime: Runtime) -> APIRouter:
    settings = runtime.settings
    router = APIRouter()
    store: BlobStore = make_blob_store(settings)

    @router.post("/v1/images/generations", tags=["openai"], response_model=None,
                 openapi_extra=_body_doc(settings))
    async def images_generations(request: Request, api_key: ApiKey) -> Response:
        body = await json_body(request)
        try:
            req = ImagesRequest.model_validate(body)
        except ValidationError as exc:
            raise validation_to_openai(exc) from None
        n = req.n or 1
        if n > settings.IMAGES_MAX_N:
            raise oe.invalid_request(f"n must be between 1 and {settings.IMAGES_MAX_N} (IMAGES_MAX_N): each "
                                     "image is one Coze conversation.", param="n")
        model = req.model or "dall-e-3"
        timeout = out_time(request)
        rid = request.state.request_id
        # All downloads of this request: IMAGE_DOWNLOAD_TOTAL_BYTES within IMAGE_DOWNLOAD_TIMEOUT.
        budget = DownloadBudget(settings.IMAGE_DOWNLOAD_TOTAL_BYTES, settings.IMAGE_DOWNLOAD_TIMEOUT)

        async def one(i: int) -> tuple[list[Drawn], str]:
            spec = ChatSpec(request_id=rid if n == 1 else f"{rid}-{i}", model=model,
                            messages=[{"role": "user", "content": req.prompt}], stream=False,
                            channel_id=req.channelId, timeout=timeout, api_key=api_key,
                            raw_prompt=drawing_prompt(req.prompt),
                            on_posted=lambda: oe.mark_posted(request.state))
            conv = await runtime.service.start(spec, client_gone=request.is_disconnected)
            try:
                last = await conv.result()
                assert last is not None  # no client_gone check: it runs to the end
                decision, view = last.decision, last.view
                if decision.error is not None:
                    raise coze_error_to_openai(decision.error)
                if decision.timeout_without_text:
                    raise se.timeout(conv.timeout_seconds)
                urls = extract_image_urls(view.text, view.image_urls)
                if not urls and decision.reason == "deadline":  # cut short: the image may still come
                    raise se.timeout(conv.timeout_seconds)
                if not urls:
                    log.warning("image request answered without an image", extra={"request_id": spec.request_id})
                    raise oe.upstream_error("The Coze bot answered with text but no image (does it have an "
                                            "image-generation plugin?). Nothing to return.",
                                            code="no_image_generated", retry=False)
                # Download now, while the channel (and its attachments) still exist.
                # At most n images per conversation (n is all the request returns anyway).
                drawn = await _download_all(urls[:n], settings, budget)
                return drawn, revised_prompt(view.text, urls, req.prompt)
            except (oe.OpenAIError, se.ServiceError):
                raise
            except Exception:  # the store failed while waiting, a bug: a clear 500, logged once
                log.exception("the reply could not be awaited", extra={"request_id": spec.request_id})
                raise oe.failed_after_post(rid) from None
            finally:
                # Awaited: the deletion is registered before the response leaves (a buffered Lambda
                # may freeze right after, before a background task would run).
                await conv.aclose()

        results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
        images: list[tuple[Drawn, str]] = []
        errors: list[BaseException] = []
        for r in results:
            if isinstance(r, BaseException):
                errors.append(r)
            else:
                images += [(d, r[1]) for d in r[0]]
        if not images:
            err = next((e for e in errors if isinstance(e, oe.OpenAIError | se.ServiceError)), None)
            if err is not None:
                raise err
            raise errors[0]
        if errors:
            log.warning("some images of the request failed", extra={"request_id": rid, "failed": len(errors)})
        images = images[:n]
        data: list[dict[str, Any]] = []
        for drawn, revised in images:
            if req.response_format == "b64_json":
                data.append({"b64_json": base64.b64encode(drawn.data).decode("ascii"), "revised_prompt": revised})
            else:
                try:
                    url = await store.put(drawn.data, drawn.mime)
                except BlobStoreError as exc:
                    raise oe.upstream_error(f"The image was drawn but could not be stored: {exc}.",
                                            code="image_store_failed", status=503, retry=False) from None
                data.append({"url": _absolute(url, request, settings.PUBLIC_BASE_URL), "revised_prompt": revised})
        return JSONResponse({"created": int(time.time()), "data": data}, headers={"x-should-retry": "false"})

    @router.get("/files/{name}", tags=["files"], summary="An image re-hosted by /v1/images/generations")
    async def get_file(name: str) -> Response:
        headers = {"Cache-Control": "public, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff",
                   "Content-Security-Policy": "default-src 'none'; sandbox"}
        if isinstance(store, LocalBlobStore):
            hit = store.locate(name)
            if hit is None:
                raise oe.OpenAIError(404, "No such file.", code="file_not_found")
            path, mime = hit
            return FileResponse(path, media_type=mime, headers=headers)
        try:  # S3 (cdp.adapters.blobs.S3BlobStore): read the object; the bucket stays private
            linker = getattr(store, "get_or_link", None)  # S3: a large object -> short-lived presigned URL
            blob = await (linker(name) if linker is not None else store.get(name))
        except BlobStoreError as exc:
            raise oe.upstream_error(f"The file store is unavailable: {exc}.", code="file_store_unavailable",
                                    status=503) from None
        if blob is None:
            raise oe.OpenAIError(404, "No such file.", code="file_not_found")
        if isinstance(blob, str):  # never through the (buffered, 6 MB) Lambda body
            return RedirectResponse(blob, status_code=307, headers={"Cache-Control": "no-store"})
        return Response(blob[0], media_type=blob[1], headers=headers)

    return router


async def _download_all(urls: list[str], settings: Settings, budget: DownloadBudget) -> list[Drawn]:
    drawn: list[Drawn] = []
    problems: list[str] = []
    try:
        async with asyncio.timeout_at(budget.start()), http_client(settings) as client:
            for url in urls:
                try:
                    data, mime = await fetch_image(client, url, settings.IMAGE_MAX_DOWNLOAD_BYTES, budget)
                except ImageFetchError as exc:
                    problems.append(str(exc))
                    log.warning("could not fetch an image of the reply", extra={"problem": str(exc)})
                    continue
                drawn.append(Drawn(data, mime))
    except TimeoutError:
        problems.append(f"the downloads took over {settings.IMAGE_DOWNLOAD_TIMEOUT:g} s (IMAGE_DOWNLOAD_TIMEOUT)")
        log.warning("image downloads stopped at their deadline", extra={"downloaded": len(drawn)})
    if not drawn:
        raise oe.upstream_error(f"The Coze bot answered with {len(urls)} image link(s) but none could be "
                                f"downloaded as an image ({'; '.join(problems[:3])}).",
                                code="image_download_failed", retry=False)
    return drawn


def _absolute(url: str, request: Request, public_base: str) -> str:
    if url.startswith(("http://", "https://")):
        return url
    base = public_base or str(request.base_url).rstrip("/")
    return base + url
