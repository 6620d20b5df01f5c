"""Tool calls and JSON mode at the edge: the request's tools / response_format (400s), and the answer
of a StructuredReply (cdp.app.structured) as one OpenAI completion or as a stream of chunks.

Streams follow OpenAI's chunk format: the role chunk, then either content deltas (prose, once the
first characters show it is not a tool call; JSON mode's answer once it is checked) or, per call,
a chunk with index, id, type, function.name and empty arguments followed by argument fragments;
the finish chunk says "tool_calls".

`max_tokens` / `stop` (cdp.domain.output) cut a text answer (prose, or JSON mode's answer: cut JSON is
what OpenAI sends too, with finish_reason "length"), streamed or not. A tool call is never cut: its
arguments are only usable whole, and the protocol's answer is checked before any of it is sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from cdp.app import errors as se
from cdp.app.conversation import Conversation
from cdp.app.structured import Step, StructuredReply
from cdp.domain.output import LimitedStream, OutputLimiter
from cdp.domain.stream import DeltaAssembler
from cdp.domain.tokens import count_tokens
from cdp.domain.tools import Emulation, TextAnswer, ToolCallsAnswer, ToolsError, parse_request
from cdp.entry.api.common import coze_error_to_openai
from cdp.entry.api.runtime import Runtime
from cdp.entry.openai import errors as oe
from cdp.entry.openai.wire import (
    SSE_DONE,
    SSE_PING,
    ChunkEncoder,
    completion_body,
    sse,
    usage,
    usage_chunk_body,
)

log = logging.getLogger("cdp.entry.api.tooling")

HEARTBEAT_SECONDS = 10.0  # SSE keep-alive while the answer is held back; disconnect checks otherwise
MAX_DELTA_CHARS = 8000
ARGUMENT_FRAGMENT = 256  # characters of a tool call's arguments per chunk


def emulation_of(body: Any, enabled: bool) -> Emulation | None:
    """The emulation a request asks for, or None when TOOLS_EMULATION=0 (the fields are then ignored,
    as the original did). Raises a 400 for tools / tool_choice / response_format OpenAI would refuse."""
    if not enabled or not isinstance(body, dict):
        return None
    try:
        return parse_request(body)
    except ToolsError as exc:
        raise oe.invalid_request(exc.message, param=exc.param, code=exc.code) from None


def _error_of(step: Step, conv: Conversation) -> oe.OpenAIError | None:
    decision = step.progress.decision
    if decision.error is not None:
        return coze_error_to_openai(decision.error)
    if decision.timeout_without_text:
        return oe.from_service_error(se.timeout(conv.timeout_seconds))
    return None


def _finish_reason(step: Step, limiter: OutputLimiter) -> str:
    if isinstance(step.answer, ToolCallsAnswer):
        return "tool_calls"
    return limiter.finish_reason or step.progress.decision.finish_reason or "stop"


async def respond(request: Request, runtime: Runtime, conv: Conversation, emulation: Emulation,
                  limiter: OutputLimiter, *, completion_id: str, model: str, stream: bool,
                  include_usage: bool) -> Response:
    """The response of a posted conversation whose answer follows the protocol, within the client's
    `limiter` (max_tokens, stop: text answers only); closes `conv`."""
    reply = StructuredReply(runtime.service, conv, emulation)
    created = int(time.time())
    if stream:
        out = LimitedStream(DeltaAssembler(holdback=runtime.settings.STREAM_HOLDBACK), limiter)
        return StreamingResponse(_stream(reply, completion_id, created, model, include_usage, out),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                                          "Connection": "keep-alive", "x-should-retry": "false"})
    try:
        last: Step | None = None
        async with aclosing(reply.steps(heartbeat=HEARTBEAT_SECONDS)) as steps:
            async for step in steps:
                if step.done:
                    last = step
                    break
                if await request.is_disconnected():
                    log.info("client went away before the reply completed",
                             extra={"request_id": conv.spec.request_id})
                    return Response(status_code=499)
        assert last is not None
        err = _error_of(last, conv)
        if err is not None:
            raise err
        answer = last.answer
        if isinstance(answer, TextAnswer):
            text, _ = limiter.apply(answer.text)
            completion_tokens = count_tokens(text) if limiter.done else count_tokens(last.progress.view.text)
        else:
            text, completion_tokens = last.progress.view.text, count_tokens(last.progress.view.text)
        body = completion_body(id=completion_id, created=created, model=model, content=text,
                               finish_reason=_finish_reason(last, limiter),
                               usage=usage(reply.prompt_tokens, completion_tokens))
        if isinstance(answer, ToolCallsAnswer):
            body["choices"][0]["message"].update(content=None, tool_calls=answer.calls)
        return JSONResponse(body, headers={"x-should-retry": "false"})
    except (oe.OpenAIError, se.ServiceError):
        raise
    except Exception:
        log.exception("the reply could not be awaited", extra={"request_id": conv.spec.request_id})
        raise oe.failed_after_post(conv.spec.request_id) from None
    finally:
        await conv.aclose()


def tool_call_chunks(enc: ChunkEncoder, calls: list[dict]) -> list[bytes]:
    """OpenAI's stream of tool calls: per call, its head (index, id, type, name, arguments "") and
    then its arguments in fragments."""
    frames = []
    for i, call in enumerate(calls):
        fn = call["function"]
        frames.append(enc.chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                                 "function": {"name": fn["name"], "arguments": ""}}]}))
        args = fn["arguments"]
        for k in range(0, len(args), ARGUMENT_FRAGMENT):
            frames.append(enc.chunk({"tool_calls": [{"index": i,
                                                     "function": {"arguments": args[k:k + ARGUMENT_FRAGMENT]}}]}))
    return frames


async def _stream(reply: StructuredReply, cid: str, created: int, model: str, include_usage: bool,
                  out: LimitedStream) -> AsyncIterator[bytes]:
    conv = reply.conv
    enc = ChunkEncoder(id=cid, created=created, model=model)

    def content_chunks(text: str) -> list[bytes]:
        return [enc.content(text[i:i + MAX_DELTA_CHARS]) for i in range(0, len(text), MAX_DELTA_CHARS)]

    try:
        # Tools: content null until the answer is known (a tool call has no content at all).
        yield enc.chunk({"role": "assistant", "content": None if reply.emulation.tools else ""})
        try:
            last: Step | None = None
            sent_at = time.monotonic()
            async with aclosing(reply.steps(heartbeat=HEARTBEAT_SECONDS)) as steps:
                async for step in steps:
                    if step.done:
                        last = step
                        break
                    frames = content_chunks(out.update(step.text)) if step.text is not None else []
                    if out.done:  # max_tokens or a stop string reached in prose: the answer ends here
                        last = step
                        for frame in frames:
                            yield frame
                        break
                    if not frames and (not step.progress.changed or time.monotonic() - sent_at >= HEARTBEAT_SECONDS):
                        frames = [SSE_PING]  # also while a growing answer is held back: the line stays alive
                    for frame in frames:
                        yield frame
                    if frames:
                        sent_at = time.monotonic()
            assert last is not None
            err = None if out.done else _error_of(last, conv)
            if err is not None:
                yield sse(err.body()) + SSE_DONE
                return
            answer = last.answer
            if isinstance(answer, ToolCallsAnswer):
                tail = tool_call_chunks(enc, answer.calls)
            else:
                assert out.done or isinstance(answer, TextAnswer)
                tail = [] if out.done else content_chunks(out.finish(answer.text))
            tail.append(enc.chunk({}, _finish_reason(last, out.limiter)))
            if include_usage:
                sent = out.text if out.limiter.done else last.progress.view.text
                tail.append(sse(usage_chunk_body(id=cid, created=created, model=model, usage=usage(
                    reply.prompt_tokens, count_tokens(sent)))))
            tail.append(SSE_DONE)
            yield b"".join(tail)
        except se.ServiceError as exc:  # broke the protocol twice, or the correction could not be posted
            yield sse(oe.from_service_error(exc).body()) + SSE_DONE
        except Exception:
            log.exception("the stream failed after the prompt was posted", extra={"request_id": conv.spec.request_id})
            yield sse(oe.failed_after_post(conv.spec.request_id).body()) + SSE_DONE
    finally:
        conv.close()
