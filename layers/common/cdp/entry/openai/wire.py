"""Request models and the exact response/chunk shapes of OPENAI-WIRE.md."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cdp.domain.discord import is_snowflake

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
_PART_TYPES = {"text", "input_text", "image_url", "input_image", "file", "input_file"}


class PartError(ValueError):
    """A content part is wrong; `path` is where inside `content` (e.g. "0.type"), so the 400 can name
    the parameter exactly (see `part_param`)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


def part_param(error: dict[str, Any]) -> str | None:
    """The full parameter of a pydantic error raised as a PartError (messages.0.content.0.type), else None."""
    exc = (error.get("ctx") or {}).get("error")
    if not isinstance(exc, PartError):
        return None
    loc = [str(p) for p in error.get("loc", ()) if p != "body"]
    return ".".join([*loc, exc.path])


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    @field_validator("content")
    @classmethod
    def _parts(cls, v: Any) -> Any:
        if isinstance(v, list):
            for i, part in enumerate(v):
                kind = part.get("type")
                if not isinstance(kind, str) or kind not in _PART_TYPES:  # {} or [] are not hashable
                    got = repr(kind) if isinstance(kind, str) else f"a JSON {_json_kind(kind)}"
                    raise PartError(f"{i}.type", f"must be one of text, image_url, file (got {got})")
                if kind in ("text", "input_text") and not isinstance(part.get("text"), str):
                    raise PartError(f"{i}.text", "must be a string")
                if kind == "image_url":
                    url = part.get("image_url")
                    url = url.get("url") if isinstance(url, dict) else url
                    if not isinstance(url, str) or not url:
                        raise PartError(f"{i}.image_url", "its url must be a non-empty string")
        return v


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return {dict: "object", list: "array", str: "string"}.get(type(value), "number")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """Fields that cannot apply (temperature, tools, …) are accepted and ignored (extra=allow)."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    channelId: str | None = None

    @field_validator("n")
    @classmethod
    def _n(cls, v: int | None) -> int | None:
        if v is not None and v != 1:
            raise ValueError("only n=1 is supported: a Coze bot gives one answer per prompt")
        return v

    @field_validator("channelId")
    @classmethod
    def _channel(cls, v: str | None) -> str | None:
        if v is not None and not is_snowflake(v):
            raise ValueError("channelId must be a Discord channel id (15-21 digits)")
        return v or None


def completion_body(*, id: str, created: int, model: str, content: str, finish_reason: str,
                    usage: dict[str, int]) -> dict[str, Any]:
    return {
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                     "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage, "system_fingerprint": None,
    }


def chunk_body(*, id: str, created: int, model: str, delta: dict[str, Any],
               finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


class ChunkEncoder:
    """SSE frames of one stream's chunks. A content chunk, the frame sent for every Coze edit, is
    the pre-encoded frame of `chunk_body` around the JSON string of the text: byte for byte what
    `sse(chunk_body(..., delta={"content": text}))` gives, without building and encoding the dict."""

    _MARK = "\x00cdp-content\x00"

    def __init__(self, *, id: str, created: int, model: str) -> None:
        self.id, self.created, self.model = id, created, model
        frame = sse(chunk_body(id=id, created=created, model=model, delta={"content": self._MARK}))
        head, sep, tail = frame.partition(_json_str(self._MARK).encode())
        assert sep, "the content mark must appear once in a chunk frame"
        self._head, self._tail = head, tail

    def content(self, text: str) -> bytes:
        return self._head + _json_str(text).encode() + self._tail

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return sse(chunk_body(id=self.id, created=self.created, model=self.model, delta=delta,
                              finish_reason=finish_reason))


def _json_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def usage_chunk_body(*, id: str, created: int, model: str, usage: dict[str, int]) -> dict[str, Any]:
    return {"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": None, "choices": [], "usage": usage}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def sse(data: dict[str, Any] | str) -> bytes:
    """One SSE frame, exactly `data: <json>\\n\\n` (compact JSON has no raw newlines)."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


SSE_PING = b": ping\n\n"
SSE_DONE = sse("[DONE]")


def model_entry(model_id: str, created: int, owned_by: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}
