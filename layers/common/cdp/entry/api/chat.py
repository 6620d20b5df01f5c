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
from cdp.app.conversation import ChatSpec, Conversation, Progress
from cdp.domain.output import LimitedStream, OutputLimiter
from cdp.domain.stream import DeltaAssembler
from cdp.domain.tokens import count_tokens
from cdp.entry.api import tooling
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
    param_error,
    part_param,
    request_body_doc,
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

    @router.post("/v1/chat/completions", tags=["openai"], response_model=None,
                 openapi_extra=request_body_doc(ChatCompletionRequest, "OpenAI's chat request (see the README's "
                                                "API table for what is honoured, emulated or ignored)"))
    async def chat_completions(request: Request, api_key: ApiKey) -> Response:
        body = await json_body(request)
        try:
            req = ChatCompletionRequest.model_validate(body)
        except Exception as exc:  # pydantic.ValidationError
            raise _invalid(exc) from None
        request.state.model = req.model  # for the metrics and the status page (cdp.entry.api.observe)
        emulation = tooling.emulation_of(body, runtime.settings.TOOLS_EMULATION)  # tools, response_format
        spec = ChatSpec(
            request_id=request.state.request_id, model=req.model,
            messages=[m.model_dump(exclude_none=True) for m in req.messages], stream=req.stream,
            channel_id=req.channelId, timeout=out_time(request), api_key=api_key, emulation=emulation,
            conversation=conversation_name(request, body, runtime.settings),
            on_posted=lambda: oe.mark_posted(request.state))  # no 5xx invites a retry from then on
        # Raises ServiceError before anything is streamed; stops posting a long prompt if the client leaves.
        conv = await runtime.service.start(spec, client_gone=request.is_disconnected)
        request.state.conversation = conv  # its trace: TTFT and error kind (cdp.entry.api.observe)
        completion_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        limiter = OutputLimiter(req.token_limit, req.stop_strings)  # max_tokens, stop (domain/output.py)
        if emulation is not None and emulation.active:  # the answer is read by the tool/JSON protocol
            return await tooling.respond(
                request, runtime, conv, emulation, limiter, completion_id=completion_id, model=req.model,
                stream=req.stream,
                include_usage=bool(req.stream and req.stream_options and req.stream_options.include_usage))
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(
                _stream(conv, completion_id, created, req.model, include_usage,
                        LimitedStream(DeltaAssembler(holdback=runtime.settings.STREAM_HOLDBACK), limiter)),
                media_type="text/event-stream", headers={**STREAM_HEADERS, "x-should-retry": "false"})
        try:
            return await _complete(request, conv, completion_id, created, req.model, limiter,
                                   runtime.settings.STREAM_HOLDBACK)
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
    errors = getattr(exc, "errors", lambda: [])()
    wrong = param_error(errors[0]) if errors else None
    if wrong is not None:  # a parameter out of OpenAI's range: OpenAI's own text and code
        return oe.invalid_request(wrong.message, param=wrong.param, code=wrong.code)
    err = validation_to_openai(exc)
    param = part_param(errors[0]) if errors else None
    if param is not None:
        err.param = param
        err.message = f"Invalid value for '{param}': {errors[0]['ctx']['error']}"
    return err


async def _complete(request: Request, conv: Conversation, cid: str, created: int, model: str,
                    limiter: OutputLimiter, holdback: int) -> Response:
    # With max_tokens or stop, waiting ends as soon as the limit is reached (the text as a stream
    # would have sent it); without, the whole reply is awaited.
    early = LimitedStream(DeltaAssembler(holdback=holdback), limiter) if limiter.active else None

    def reached(progress: Progress) -> bool:
        assert early is not None
        if progress.changed:
            early.update(progress.view.text)
        return early.done

    last = await conv.result(client_gone=request.is_disconnected, check_every=DISCONNECT_CHECK_SECONDS,
                             stop_when=reached if early is not None else None)
    if last is None:
        log.info("client went away before the reply completed", extra={"request_id": conv.spec.request_id})
        return Response(status_code=499)
    decision, view = last.decision, last.view
    if early is not None and early.done:
        text, finish = early.text, limiter.finish_reason
    else:
        if decision.error is not None:
            raise coze_error_to_openai(decision.error)
        if decision.timeout_without_text:
            raise se.timeout(conv.timeout_seconds)
        text, finish = OutputLimiter(limiter.max_tokens, limiter.stops).apply(view.text)
    body = completion_body(id=cid, created=created, model=model, content=text,
                           finish_reason=finish or decision.finish_reason or "stop",
                           usage=usage(conv.prompt_tokens, count_tokens(text)))
    return JSONResponse(body, headers={"x-should-retry": "false"})


async def _stream(conv: Conversation, cid: str, created: int, model: str,
                  include_usage: bool, out: LimitedStream) -> AsyncIterator[bytes]:
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
                    delta = out.update(progress.view.text)
                    for frame in content_chunks(delta):
                        yield frame
                    if out.done:  # max_tokens or stop reached: the answer ends here
                        break
                else:
                    yield SSE_PING
            assert last is not None
            decision, view = last.decision, last.view
            if out.done:  # cut early: the conversation is closed below, as when a client leaves
                yield _finish_frames(enc, out.limiter.finish_reason or "length", include_usage, conv, out.text)
                return
            if decision.error is not None or decision.timeout_without_text:
                err = (coze_error_to_openai(decision.error) if decision.error is not None
                       else oe.from_service_error(se.timeout(conv.timeout_seconds)))
                yield sse(err.body())
                yield SSE_DONE
                return
            tail = content_chunks(out.finish(view.text))
            if out.assembler.diverged:
                log.warning("Coze rewrote text that was already streamed; the streamed answer differs from "
                            "the final one", extra={"request_id": conv.spec.request_id})
            sent = out.text if out.limiter.active else view.text
            tail.append(_finish_frames(enc, out.limiter.finish_reason or decision.finish_reason or "stop",
                                       include_usage, conv, sent))
            yield b"".join(tail)  # the same frames in one write
        except Exception:  # the store failed while waiting, a bug: never end as if the answer were whole
            log.exception("the stream failed after the prompt was posted",
                          extra={"request_id": conv.spec.request_id})
            yield sse(oe.failed_after_post(conv.spec.request_id).body()) + SSE_DONE
    finally:
        # Not `await conv.aclose()`: this runs when the client goes and the generator is cancelled,
        # where awaiting is unsafe; close() schedules the deletion as a task the channel keeper keeps.
        conv.close()


def _finish_frames(enc: ChunkEncoder, finish_reason: str, include_usage: bool, conv: Conversation,
                   sent: str) -> bytes:
    """The finish chunk, the usage chunk if asked for (tokens counted once, at the end), [DONE]."""
    frames = [enc.chunk({}, finish_reason)]
    if include_usage:
        frames.append(sse(usage_chunk_body(id=enc.id, created=enc.created, model=enc.model,
                                           usage=usage(conv.prompt_tokens, count_tokens(sent)))))
    frames.append(SSE_DONE)
    return b"".join(frames)
