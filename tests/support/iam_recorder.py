"""Record every AWS call a process makes (every botocore client, at the step that emits
`before-parameter-build`), as JSON lines: component, service, operation, and what IAM decides on: table, index,
partition keys (dynamodb:LeadingKeys), bucket/key, secret id, function.

- In-process (the Lambda handlers of tests/aws): `install(path)` once, then `with component("api"): ...`.
- In a subprocess (the listener): put tests/support/iam_site on PYTHONPATH and set CDP_IAM_LOG (file)
  and CDP_IAM_COMPONENT; its sitecustomize.py calls `install_from_env()` at interpreter start.
The hook only reads the parameters; it never changes a call.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SITE_DIR = Path(__file__).resolve().parent / "iam_site"

_state: dict[str, Any] = {"path": None, "component": None, "installed": False}
_lock = threading.Lock()


def _value(v: Any) -> str | None:
    if isinstance(v, dict) and len(v) == 1:
        return str(next(iter(v.values())))
    return None if v is None else str(v)


def _leading_keys(op: str, params: dict[str, Any]) -> list[str] | None:
    if op in ("GetItem", "PutItem", "UpdateItem", "DeleteItem"):
        item = params.get("Key") or params.get("Item") or {}
        pk = _value(item.get("pk"))
        return None if pk is None else [pk]
    if op == "Query":
        cond = params.get("KeyConditionExpression", "")
        values = params.get("ExpressionAttributeValues", {})
        names = params.get("ExpressionAttributeNames", {})
        for part in cond.split(" AND "):
            left, _, right = part.partition("=")
            left = names.get(left.strip(), left.strip())
            if left == "pk" and right.strip() in values:
                return [_value(values[right.strip()]) or ""]
        return []
    if op in ("BatchGetItem", "BatchWriteItem", "TransactWriteItems", "TransactGetItems"):
        return ["<batch>"]
    return None  # Scan, DescribeTable...: no partition key


def describe(service: str, op: str, params: dict[str, Any]) -> dict[str, Any]:
    call: dict[str, Any] = {"service": service, "operation": op}
    if service == "dynamodb":
        call["table"] = params.get("TableName")
        if params.get("IndexName"):
            call["index"] = params["IndexName"]
        call["leading_keys"] = _leading_keys(op, params)
    elif service == "s3":
        call["bucket"], call["key"] = params.get("Bucket"), params.get("Key")
    elif service == "secretsmanager":
        call["secret"] = params.get("SecretId")
    elif service == "lambda":
        call["function"] = params.get("FunctionName")
    return call


def _record(params: dict[str, Any], model: Any) -> None:
    path, comp = _state["path"], _state["component"]
    if path is None or comp is None:
        return
    service = model.service_model.signing_name or model.service_model.endpoint_prefix
    call = {"component": comp, "pid": os.getpid(), **describe(service, model.name, params)}
    with _lock, open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(call) + "\n")


def install(path: str | os.PathLike[str], default_component: str | None = None) -> None:
    """Record every call of every botocore client, also those created before (cached clients), to `path`.

    Wraps `BaseClient._emit_api_params`, the one step both API calls and presigned URLs go through
    (it emits `before-parameter-build`); a per-client event handler would miss clients created before
    the install, which cdp caches per process. Read-only: the parameters pass through unchanged."""
    _state["path"] = str(path)
    if default_component is not None:
        _state["component"] = default_component
    if _state["installed"]:
        return
    from botocore.client import BaseClient

    original = BaseClient._emit_api_params

    def emit_api_params(self, api_params, operation_model, context):
        params = original(self, api_params, operation_model, context)
        _record(params, operation_model)
        return params

    BaseClient._emit_api_params = emit_api_params
    _state["installed"] = True


def install_from_env() -> None:
    path = os.environ.get("CDP_IAM_LOG")
    if path:
        install(path, os.environ.get("CDP_IAM_COMPONENT") or "unknown")


@contextlib.contextmanager
def component(name: str) -> Iterator[None]:
    """Attribute the calls made inside to `name` (in-process handlers)."""
    previous = _state["component"]
    _state["component"] = name
    try:
        yield
    finally:
        _state["component"] = previous


def read(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def subprocess_env(path: str | os.PathLike[str], name: str) -> dict[str, str]:
    """Environment for a child process whose AWS calls are recorded as `name`."""
    py = [str(SITE_DIR), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"CDP_IAM_LOG": str(path), "CDP_IAM_COMPONENT": name, "PYTHONPATH": os.pathsep.join(py)}
