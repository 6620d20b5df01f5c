"""Powertools Logger and Metrics, shared by every handler; cdp's own loggers write through them.

- one JSON line per record, with the Lambda request id (`inject_lambda_context`)
- every configured secret (Settings.secrets()) is replaced by its fingerprint: powertools' formatter is
  wrapped by cdp.entry.logs.RedactingFormatter (the one Redactor), which leaves the record alone, so
  powertools still renders the traceback (`exception`); the handler is also the root logger's, so
  third-party loggers (mangum, botocore, asyncio, uvicorn) are redacted too
- metrics are CloudWatch EMF lines (namespace POWERTOOLS_METRICS_NAMESPACE, default CozeDiscordProxy)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

SERVICE = "coze-discord-proxy"
NAMESPACE = "CozeDiscordProxy"

_logger: Any = None
_metrics: Any = None


def logger():
    global _logger
    if _logger is None:
        from aws_lambda_powertools import Logger

        _logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", SERVICE),
                         level=os.environ.get("POWERTOOLS_LOG_LEVEL") or os.environ.get("LOG_LEVEL") or "INFO")
    return _logger


def metrics():
    global _metrics
    if _metrics is None:
        from aws_lambda_powertools import Metrics

        _metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE),
                           service=os.environ.get("POWERTOOLS_SERVICE_NAME", SERVICE))
    return _metrics


def configure(level: str = "INFO", secrets: Iterable[str | None] = ()) -> None:
    """Route the `cdp` loggers and the root logger through the powertools handler, redacted."""
    from cdp.entry.logs import RedactingFormatter, Redactor, quiet_noisy, set_redactor

    redactor = Redactor(secrets)
    set_redactor(redactor)
    plog = logger()
    handler = plog.registered_handler
    inner = handler.formatter
    while isinstance(inner, RedactingFormatter):  # configured before: wrap the original once
        inner = inner.inner
    handler.setFormatter(RedactingFormatter(inner or logging.Formatter(), redactor))
    for f in list(handler.filters):  # filters that rewrote records (and dropped tracebacks) are gone
        handler.removeFilter(f)
    plog.setLevel(level)
    plog_logger = logging.getLogger(plog.name) if hasattr(plog, "name") else None
    if plog_logger is not None:
        plog_logger.propagate = False  # its lines reach the handler once, not again through the root
    cdp_log = logging.getLogger("cdp")
    for h in list(cdp_log.handlers):
        cdp_log.removeHandler(h)
    cdp_log.addHandler(handler)
    cdp_log.setLevel(level)
    cdp_log.propagate = False
    root = logging.getLogger()  # Lambda's runtime puts its own (unredacted) handler here
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    quiet_noisy(level)
