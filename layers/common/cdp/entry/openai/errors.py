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


def from_service_error(err: ServiceError) -> OpenAIError:
    """The one mapping of the use cases' errors to OpenAI's status codes and headers."""
    if err.kind is ErrorKind.INVALID_REQUEST or err.kind is ErrorKind.CONTEXT_TOO_LONG:
        return OpenAIError(400, err.message, param=err.param, code=err.code)
    if err.kind is ErrorKind.MODEL_NOT_FOUND:
        return OpenAIError(404, err.message, param=err.param, code=err.code)
    if err.kind is ErrorKind.UNAVAILABLE:
        return unavailable(err.message, err.retry_after or 60, code=err.code or "no_available_account")
    if err.kind is ErrorKind.TIMEOUT:
        # The prompt is already posted: a retry would post it again, so tell the SDK not to.
        return OpenAIError(504, err.message, type="timeout", code=err.code or "timeout",
                           headers={"x-should-retry": "false"})
    return upstream_error(err.message, code=err.code or "upstream_error", retry=err.retryable)
