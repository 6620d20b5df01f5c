"""Errors the use cases raise, in no protocol's terms: the edge maps each `kind` to its wire shape
(cdp.entry.openai.errors.from_service_error for /v1, the original's bodies for /api)."""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    INVALID_REQUEST = "invalid_request"  # the caller's input is wrong; nothing was posted
    CONTEXT_TOO_LONG = "context_too_long"  # the prompt exceeds the token limit
    MODEL_NOT_FOUND = "model_not_found"  # no bot serves this model for this key
    UNAVAILABLE = "unavailable"  # try again later (`retry_after` seconds); nothing was posted
    UPSTREAM = "upstream"  # Discord or Coze failed
    TIMEOUT = "timeout"  # the prompt is posted but no complete answer came in time
    BUSY = "busy"  # every account is busy and the queue is full or too slow (429); nothing was posted


class ServiceError(Exception):
    """A use case failed. `retryable` False once a prompt is posted: a retry would post it again."""

    def __init__(self, kind: ErrorKind, message: str, *, code: str | None = None, param: str | None = None,
                 retry_after: int | None = None, retryable: bool = True) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.code = code
        self.param = param
        self.retry_after = retry_after
        self.retryable = retryable


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> ServiceError:
    return ServiceError(ErrorKind.INVALID_REQUEST, message, param=param, code=code)


def context_length_exceeded(tokens: int, limit: int) -> ServiceError:
    return ServiceError(ErrorKind.CONTEXT_TOO_LONG,
                        f"This prompt is {tokens} tokens long, over the limit of {limit} tokens "
                        "(MESSAGE_MAX_TOKEN). Shorten the messages.",
                        param="messages", code="context_length_exceeded")


def model_not_found(model: str) -> ServiceError:
    return ServiceError(ErrorKind.MODEL_NOT_FOUND, f"The model `{model}` does not exist or you do not have access to it.",
                        param="model", code="model_not_found")


def unavailable(message: str, retry_after: int, code: str = "no_available_account") -> ServiceError:
    return ServiceError(ErrorKind.UNAVAILABLE, message, code=code, retry_after=retry_after)


def busy(message: str, retry_after: int, code: str = "queue_full") -> ServiceError:
    return ServiceError(ErrorKind.BUSY, message, code=code, retry_after=retry_after)


def upstream_error(message: str, code: str = "upstream_error", retry: bool = True) -> ServiceError:
    return ServiceError(ErrorKind.UPSTREAM, message, code=code, retryable=retry)


def timeout(seconds: float) -> ServiceError:
    return ServiceError(ErrorKind.TIMEOUT, f"The Coze bot did not answer within {seconds:g}s.", code="timeout",
                        retryable=False)
