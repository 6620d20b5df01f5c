"""POST /v1/chat/completions: a ChatSpec for the conversation use case, its reply as one OpenAI
completion or as an SSE stream of chunks."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from cdp.app import errors as se
from cdp.app.conversation import ChatSpec, Conversation
from cdp.domain.stream import DeltaAssembler
from cdp.domain.tokens import count_tokens
from cdp.entry.api.common import ApiKey, coze_error_to_openai, json_body, out_time, validation_to_openai
from cdp.entry.api.conversation_id import conversation_name
from cdp.entry.api.runtime import Runtime
from cdp.entry.openai import errors as oe
from cdp.entry.openai.wire import (
    SSE_DONE,
    SSE_PING,
    ChatCompletionRequest,
    ChunkEncoder,
    completion_body,
    part_param,
    sse,
    usage,
    usage_chunk_body,
)

log = logging.getLogger("cdp.entry.api.chat")

SSE_KEEPALIVE_SECONDS = 10.0
DISCONNECT_CHECK_SECONDS = 5.0  # how often a non-streamed request checks that its client is still there
MAX_DELTA_CHARS = 8000  # keeps every SSE line far below the 64 KiB clients accept
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


def build_router(runtime: Runtime) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/chat/completions", tags=["openai"], response_model=None)
    async def chat_completions(request: Request, api_key: ApiKey) -> Response:
        body = await json_body(request)
        try:
            req = ChatCompletionRequest.model_validate(body)
        except Exception as exc:  # pydantic.ValidationError
            raise _invalid(exc) from None
        spec = ChatSpec(
            request_id=request.state.request_id, model=req.model,
            messages=[m.model_dump(exclude_none=True) for m in req.messages], stream=req.stream,
            channel_id=req.channelId, timeout=out_time(request), api_key=api_key,
            conversation=conversation_name(request, body, runtime.settings))
        # Raises ServiceError before anything is streamed; stops posting a long prompt if the client leaves.
        conv = await runtime.service.start(spec, client_gone=request.is_disconnected)
        oe.mark_posted(request.state)  # from here on, no 5xx invites a retry (it would post again)
        completion_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(
                _stream(conv, completion_id, created, req.model, include_usage,
                        DeltaAssembler(holdback=runtime.settings.STREAM_HOLDBACK)),
                media_type="text/event-stream", headers={**STREAM_HEADERS, "x-should-retry": "false"})
        try:
            return await _complete(request, conv, completion_id, created, req.model)
        except (oe.OpenAIError, se.ServiceError):
            raise
        except Exception:  # the store failed while waiting, a bug: a clear 500, logged once
            log.exception("the reply could not be awaited", extra={"request_id": conv.spec.request_id})
            raise oe.failed_after_post(conv.spec.request_id) from None
        finally:
            await conv.aclose()

    return router


def _invalid(exc: Exception) -> oe.OpenAIError:
    """The 400 of a body that is not a valid chat request; a wrong content part is named to its field."""
    err = validation_to_openai(exc)
    errors = getattr(exc, "errors", lambda: [])()
    param = part_param(errors[0]) if errors else None
    if param is not None:
        err.param = param
        err.message = f"Invalid value for '{param}': {errors[0]['ctx']['error']}"
    return err


async def _complete(request: Request, conv: Conversation, cid: str, created: int, model: str) -> Response:
    last = await conv.result(client_gone=request.is_disconnected, check_every=DISCONNECT_CHECK_SECONDS)
    if last is None:
        log.info("client went away before the reply completed", extra={"request_id": conv.spec.request_id})
        return Response(status_code=499)
    decision, view = last.decision, last.view
    if decision.error is not None:
        raise coze_error_to_openai(decision.error)
    if decision.timeout_without_text:
        raise se.timeout(conv.timeout_seconds)
    body = completion_body(id=cid, created=created, model=model, content=view.text,
                           finish_reason=decision.finish_reason or "stop",
                           usage=usage(conv.prompt_tokens, count_tokens(view.text)))
    return JSONResponse(body, headers={"x-should-retry": "false"})


async def _stream(conv: Conversation, cid: str, created: int, model: str,
                  include_usage: bool, assembler: DeltaAssembler) -> AsyncIterator[bytes]:
    enc = ChunkEncoder(id=cid, created=created, model=model)
    chunk = enc.chunk

    def content_chunks(text: str) -> list[bytes]:
        if len(text) <= MAX_DELTA_CHARS:  # the usual case: one frame per edit
            return [enc.content(text)] if text else []
        return [enc.content(text[i:i + MAX_DELTA_CHARS]) for i in range(0, len(text), MAX_DELTA_CHARS)]

    try:
        yield chunk({"role": "assistant", "content": ""})  # headers + first chunk at once
        try:
            last = None
            async for progress in conv.updates(heartbeat=SSE_KEEPALIVE_SECONDS):
                last = progress
                if progress.decision.done:
                    break
                if progress.changed:
                    delta = assembler.update(progress.view.text)
                    for frame in content_chunks(delta):
                        yield frame
                else:
                    yield SSE_PING
            assert last is not None
            decision, view = last.decision, last.view
            if decision.error is not None or decision.timeout_without_text:
                err = (coze_error_to_openai(decision.error) if decision.error is not None
                       else oe.from_service_error(se.timeout(conv.timeout_seconds)))
                yield sse(err.body())
                yield SSE_DONE
                return
            tail = content_chunks(assembler.finish(view.text))
            if assembler.diverged:
                log.warning("Coze rewrote text that was already streamed; the streamed answer differs from "
                            "the final one", extra={"request_id": conv.spec.request_id})
            tail.append(chunk({}, decision.finish_reason or "stop"))
            if include_usage:  # tokens counted once, at the end
                tail.append(sse(usage_chunk_body(id=cid, created=created, model=model,
                                                 usage=usage(conv.prompt_tokens, count_tokens(view.text)))))
            tail.append(SSE_DONE)
            yield b"".join(tail)  # the same frames in one write
        except Exception:  # the store failed while waiting, a bug: never end as if the answer were whole
            log.exception("the stream failed after the prompt was posted",
                          extra={"request_id": conv.spec.request_id})
            yield sse(oe.failed_after_post(conv.spec.request_id).body()) + SSE_DONE
    finally:
        # Not `await conv.aclose()`: this runs when the client goes and the generator is cancelled,
        # where awaiting is unsafe; close() schedules the deletion as a task the channel keeper keeps.
        conv.close()
