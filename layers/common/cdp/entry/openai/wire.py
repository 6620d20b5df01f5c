"""Request models and the exact response/chunk shapes of OPENAI-WIRE.md."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

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


_URL = {"type": "string", "minLength": 1}
# The content parts `ChatMessage._parts` accepts, for the OpenAPI document.
PART_SCHEMA: dict[str, Any] = {"oneOf": [
    {"type": "object", "required": ["type", "text"],
     "properties": {"type": {"enum": ["text", "input_text"]}, "text": {"type": "string"}}},
    {"type": "object", "required": ["type", "image_url"],
     "properties": {"type": {"const": "image_url"}, "image_url": {"anyOf": [
         _URL, {"type": "object", "required": ["url"],
                "properties": {"url": _URL, "detail": {"type": "string"}}}]}}},
    {"type": "object", "required": ["type"],
     "properties": {"type": {"enum": ["input_image", "file", "input_file"]}}},
]}


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Role
    content: str | list[Annotated[dict[str, Any], WithJsonSchema(PART_SCHEMA)]] | None = None
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


class ParamError(ValueError):
    """A parameter refused with OpenAI's own text, `param` and `code` (see `check_params`)."""

    def __init__(self, message: str, param: str, code: str) -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


# OpenAI's ranges of the numeric chat parameters: (kind, minimum, maximum); None = unbounded.
PARAM_RANGES: dict[str, tuple[str, float | None, float | None]] = {
    "temperature": ("decimal", 0, 2),
    "top_p": ("decimal", 0, 1),
    "presence_penalty": ("decimal", -2, 2),
    "frequency_penalty": ("decimal", -2, 2),
    "max_tokens": ("integer", 1, None),
    "max_completion_tokens": ("integer", 1, None),
    "top_logprobs": ("integer", 0, 20),
    "seed": ("integer", None, None),
}
MAX_STOP = 4  # OpenAI's limit on stop strings
LOGIT_BIAS_RANGE = (-100, 100)
_ARTICLE = {"integer": "an", "array": "an", "object": "an"}


def _kind_of(value: Any) -> str:
    """The JSON type of a value in OpenAI's words (integer / decimal rather than number)."""
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list, str)):
        return _json_kind(value)
    return "integer" if isinstance(value, int) else "decimal"


def _type_error(param: str, expected: str, value: Any) -> ParamError:
    got = _kind_of(value)
    return ParamError(f"Invalid type for '{param}': expected {_ARTICLE.get(expected, 'a')} {expected}, but got "
                      f"{_ARTICLE.get(got, 'a')} {got} instead.", param, "invalid_type")


def _check_number(param: str, value: Any, kind: str, lo: float | None, hi: float | None) -> None:
    ok = (_kind_of(value) == "integer") if kind == "integer" else _kind_of(value) in ("integer", "decimal")
    if not ok:
        raise _type_error(param, kind, value)
    shown = value if kind == "integer" or not float(value).is_integer() else int(value)
    if lo is not None and value < lo:
        raise ParamError(f"Invalid '{param}': {kind} below minimum value. Expected a value >= {lo}, but got "
                         f"{shown} instead.", param, f"{kind}_below_min_value")
    if hi is not None and value > hi:
        raise ParamError(f"Invalid '{param}': {kind} above maximum value. Expected a value <= {hi}, but got "
                         f"{shown} instead.", param, f"{kind}_above_max_value")


def check_params(body: dict[str, Any]) -> None:
    """OpenAI's checks of the sampling/output parameters, with its texts; raises ParamError.
    null is accepted for every one of them (the default), as OpenAI does."""
    for param, (kind, lo, hi) in PARAM_RANGES.items():
        if body.get(param) is not None:
            _check_number(param, body[param], kind, lo, hi)
    if body.get("logprobs") is not None and not isinstance(body["logprobs"], bool):
        raise _type_error("logprobs", "boolean", body["logprobs"])
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str):
        if not isinstance(stop, list):
            raise ParamError(f"Invalid type for 'stop': expected one of a string or array of strings, but got "
                             f"{_ARTICLE.get(_kind_of(stop), 'a')} {_kind_of(stop)} instead.", "stop", "invalid_type")
        if len(stop) > MAX_STOP:
            raise ParamError(f"Invalid 'stop': array too long. Expected an array with maximum length {MAX_STOP}, "
                             f"but got an array with length {len(stop)} instead.", "stop", "array_above_max_length")
        for i, item in enumerate(stop):
            if not isinstance(item, str):
                raise _type_error(f"stop[{i}]", "string", item)
    bias = body.get("logit_bias")
    if bias is not None:
        if not isinstance(bias, dict):
            raise _type_error("logit_bias", "object", bias)
        for token, value in bias.items():
            _check_number(f"logit_bias.{token}", value, "decimal", *LOGIT_BIAS_RANGE)


def _num(lo: float | None = None, hi: float | None = None, doc: str = "") -> Any:
    """An optional number field whose schema says OpenAI's range (checked by `check_params`)."""
    return Field(None, ge=lo, le=hi, strict=True, description=doc or None)


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat request. Honoured: model, messages, stream, stream_options.include_usage,
    max_tokens / max_completion_tokens, stop; checked and ignored (Coze has no such knob): temperature,
    top_p, penalties, seed, logit_bias, logprobs, user, …; other fields are accepted (extra=allow)."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(None, json_schema_extra={"minimum": 1, "maximum": 1},
                          description="only 1: a Coze bot gives one answer per prompt")
    channelId: str | None = Field(None, json_schema_extra={"pattern": "^[0-9]{15,21}$"},
                                  description="a Discord channel of GUILD_ID to talk in (this project's field)")
    max_tokens: int | None = _num(1, doc="honoured: the answer is cut at this many tokens (finish_reason length)")
    max_completion_tokens: int | None = _num(1, doc="as max_tokens (the smaller one wins when both are set)")
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP)] | None = Field(
        None, description="honoured: the answer is cut before the first occurrence (up to 4 strings)")
    temperature: float | None = _num(0, 2, doc="accepted, ignored: Coze's bot settings decide")
    top_p: float | None = _num(0, 1, doc="accepted, ignored")
    presence_penalty: float | None = _num(-2, 2, doc="accepted, ignored")
    frequency_penalty: float | None = _num(-2, 2, doc="accepted, ignored")
    top_logprobs: int | None = _num(0, 20, doc="accepted, ignored: Coze gives no log probabilities")
    seed: int | None = _num(doc="accepted, ignored")
    logprobs: bool | None = Field(None, strict=True, description="accepted, ignored (logprobs is always null)")
    logit_bias: dict[str, float] | None = Field(None, description="accepted, ignored; values -100..100")
    user: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _openai_ranges(cls, data: Any) -> Any:
        if isinstance(data, dict):
            check_params(data)
        return data

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

    @property
    def token_limit(self) -> int | None:
        """The answer's token limit: the smaller of max_tokens and max_completion_tokens, if any."""
        limits = [v for v in (self.max_tokens, self.max_completion_tokens) if v is not None]
        return min(limits) if limits else None

    @property
    def stop_strings(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


def param_error(error: dict[str, Any]) -> ParamError | None:
    """The ParamError behind a pydantic error raised by `check_params`, else None."""
    exc = (error.get("ctx") or {}).get("error")
    return exc if isinstance(exc, ParamError) else None


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline_refs(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


def request_body_doc(model: type[BaseModel], description: str = "") -> dict[str, Any]:
    """`openapi_extra` documenting a JSON request body the route parses itself (so bad bodies keep the
    project's OpenAI-shaped 400s, never FastAPI's 422). The schema is self-contained (no $defs)."""
    schema = model.model_json_schema()
    body: dict[str, Any] = {"required": True, "content": {"application/json": {
        "schema": _inline_refs(schema, schema.get("$defs", {}))}}}
    if description:
        body["description"] = description
    return {"requestBody": body}


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
