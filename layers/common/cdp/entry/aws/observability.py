"""Powertools Logger and Metrics, shared by every handler; cdp's own loggers write through them.

- one JSON line per record, with the Lambda request id (`inject_lambda_context`)
- every configured secret (Settings.secrets()) is replaced by its fingerprint (cdp.entry.logs.RedactSecrets)
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


def configure(level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    """Route the `cdp` loggers through the powertools handler and redact secrets on every record."""
    from cdp.entry.logs import RedactSecrets

    plog = logger()
    handler = plog.registered_handler
    for f in list(handler.filters):
        if isinstance(f, RedactSecrets):
            handler.removeFilter(f)
    handler.addFilter(RedactSecrets(secrets))
    plog.setLevel(level)
    cdp_log = logging.getLogger("cdp")
    for h in list(cdp_log.handlers):
        cdp_log.removeHandler(h)
    cdp_log.addHandler(handler)
    cdp_log.setLevel(level)
    cdp_log.propagate = False
