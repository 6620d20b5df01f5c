"""OpenAI-shaped errors: `{"error": {message, type, param, code}}` with the status codes clients expect."""

from __future__ import annotations

from typing import Any

from cdp.app.errors import ErrorKind, ServiceError


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)


def invalid_api_key() -> OpenAIError:
    return OpenAIError(401, "Incorrect API key provided. Send it as 'Authorization: Bearer <PROXY_SECRET key>'.",
                       code="invalid_api_key")


def not_found(path: str) -> OpenAIError:
    return OpenAIError(404, f"Unknown route: {path}", code="not_found")


def method_not_allowed(method: str, path: str) -> OpenAIError:
    return OpenAIError(405, f"Method {method} is not allowed on {path}", code="method_not_allowed")


def rate_limited(retry_after: int) -> OpenAIError:
    return OpenAIError(429, f"Rate limit reached: too many requests from your address. Retry in {retry_after}s.",
                       type="requests", code="rate_limit_exceeded",
                       headers={"Retry-After": str(retry_after)})


def unavailable(message: str, retry_after: int, code: str = "no_available_account") -> OpenAIError:
    return OpenAIError(503, message, type="server_error", code=code, headers={"Retry-After": str(retry_after)})


def upstream_error(message: str, code: str = "upstream_error", status: int = 502,
                   retry: bool = True) -> OpenAIError:
    headers = {} if retry else {"x-should-retry": "false"}
    return OpenAIError(status, message, type="server_error", code=code, headers=headers)


NO_RETRY = {"x-should-retry": "false"}


def mark_posted(state: Any) -> None:
    """Record on a request's `state` that its prompt is posted: from then on every 5xx of the request
    carries `x-should-retry: false` (cdp.entry.api.app's error handlers read it)."""
    state.prompt_posted = True


def is_posted(state: Any) -> bool:
    return bool(getattr(state, "prompt_posted", False))


def failed_after_post(request_id: str | None) -> OpenAIError:
    """An unexpected failure (the store, a bug) once the prompt is posted: a 500 the SDKs must not
    retry (a retry would post the prompt again). Says what happened, never the internals."""
    where = f" (request {request_id})" if request_id else ""
    return OpenAIError(500, "The prompt was posted, but coze-discord-proxy failed while waiting for the "
                            f"reply{where}; see its log. Not retried automatically: a retry would post "
                            "the prompt again.", type="server_error", code="internal_error", headers=NO_RETRY)


def no_retry_once_posted(err: OpenAIError, posted: bool) -> OpenAIError:
    """`err` with `x-should-retry: false` if it is a 5xx and the prompt is already posted."""
    if posted and err.status >= 500 and err.headers.get("x-should-retry") != "false":
        err.headers["x-should-retry"] = "false"
    return err


def from_service_error(err: ServiceError) -> OpenAIError:
    """The one mapping of the use cases' errors to OpenAI's status codes and headers."""
    if err.kind is ErrorKind.INVALID_REQUEST or err.kind is ErrorKind.CONTEXT_TOO_LONG:
        return OpenAIError(400, err.message, param=err.param, code=err.code)
    if err.kind is ErrorKind.MODEL_NOT_FOUND:
        return OpenAIError(404, err.message, param=err.param, code=err.code)
    if err.kind is ErrorKind.UNAVAILABLE:
        out = unavailable(err.message, err.retry_after or 60, code=err.code or "no_available_account")
        return no_retry_once_posted(out, not err.retryable)
    if err.kind is ErrorKind.BUSY:  # nothing was posted: the SDKs retry after Retry-After
        return OpenAIError(429, err.message, type="requests", code=err.code or "queue_full",
                           headers={"Retry-After": str(err.retry_after or 1)})
    if err.kind is ErrorKind.TIMEOUT:
        # The prompt is already posted: a retry would post it again, so tell the SDK not to.
        return OpenAIError(504, err.message, type="timeout", code=err.code or "timeout",
                           headers={"x-should-retry": "false"})
    return upstream_error(err.message, code=err.code or "upstream_error", retry=err.retryable)
