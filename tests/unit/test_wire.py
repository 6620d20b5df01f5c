"""OpenAI wire shapes and SSE framing."""

from __future__ import annotations

import json

from cdp.app import errors as se
from cdp.entry.openai import errors as oe
from cdp.entry.openai.wire import (
    SSE_DONE,
    SSE_PING,
    chunk_body,
    completion_body,
    sse,
    usage,
    usage_chunk_body,
)


def test_sse_frames_are_exact():
    frame = sse({"a": "line1\nline2 ✓"})
    assert frame.startswith(b"data: {") and frame.endswith(b"\n\n") and frame.count(b"\n") == 2
    assert json.loads(frame[6:]) == {"a": "line1\nline2 ✓"}
    assert SSE_DONE == b"data: [DONE]\n\n" and SSE_PING.startswith(b":")


def test_chunk_and_completion_shapes():
    c = chunk_body(id="chatcmpl-1", created=1, model="m", delta={"content": "x"})
    assert c["object"] == "chat.completion.chunk" and "message" not in c["choices"][0]
    assert c["choices"][0]["finish_reason"] is None
    u = usage_chunk_body(id="chatcmpl-1", created=1, model="m", usage=usage(2, 3))
    assert u["choices"] == [] and u["usage"]["total_tokens"] == 5
    body = completion_body(id="chatcmpl-1", created=1, model="m", content="hi", finish_reason="stop",
                           usage=usage(1, 1))
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "hi", "refusal": None}
    assert body["choices"][0]["logprobs"] is None


def test_error_bodies_and_headers():
    err = oe.rate_limited(7)
    assert err.status == 429 and err.headers["Retry-After"] == "7"
    assert set(err.body()["error"]) == {"message", "type", "param", "code"}
    timeout = oe.from_service_error(se.timeout(3))
    assert timeout.headers["x-should-retry"] == "false" and timeout.status == 504
    assert timeout.message == "The Coze bot did not answer within 3s." and timeout.type == "timeout"
    assert oe.from_service_error(se.model_not_found("x")).status == 404 and oe.invalid_api_key().status == 401


def test_service_errors_map_to_openai_statuses():
    cases = [(se.invalid_request("bad", param="messages"), 400, {}),
             (se.context_length_exceeded(9, 5), 400, {}),
             (se.model_not_found("x"), 404, {}),
             (se.unavailable("later", 12), 503, {"Retry-After": "12"}),
             (se.upstream_error("down"), 502, {}),
             (se.upstream_error("posted", retry=False), 502, {"x-should-retry": "false"}),
             (se.timeout(3), 504, {"x-should-retry": "false"})]
    for err, status, headers in cases:
        mapped = oe.from_service_error(err)
        assert (mapped.status, mapped.headers, mapped.message) == (status, headers, err.message)
        assert mapped.param == err.param and mapped.code == err.code


def test_chunk_encoder_frames_are_those_of_chunk_body():
    from cdp.entry.openai.wire import ChunkEncoder, chunk_body, sse

    kw = dict(id="chatcmpl-1", created=1700000000, model='gpt-4o "mini"\u2028')
    enc = ChunkEncoder(**kw)
    for text in ["Hello", "", 'a "quoted"\n\tline\\', "你好 👩‍👩‍👧 \u2028\u2029\x00\x1f", "x" * 9000]:
        assert enc.content(text) == sse(chunk_body(**kw, delta={"content": text}))
    assert enc.chunk({"role": "assistant", "content": ""}) == sse(chunk_body(**kw, delta={"role": "assistant",
                                                                                          "content": ""}))
    assert enc.chunk({}, "stop") == sse(chunk_body(**kw, delta={}, finish_reason="stop"))
