"""Interactions function: Discord's interactions endpoint (slash commands) behind API Gateway.

Discord gives the endpoint 3 seconds, cold start included, so this module imports only the stdlib and
cdp.entry.interactions (discord-interactions/nacl): no fastapi, pydantic, hikari or boto3 on the PING path.
bench/interactions_import.py measures that import.

- API Gateway event (REST v1 or HTTP v2 payload): verify the signature against DISCORD_PUBLIC_KEY
  (environment), PONG to PING; a `/cdp` command gets a deferred ephemeral answer at once, and this
  function invokes itself asynchronously (InvocationType=Event) with the job.
- That job event (`{"cdp_interaction_job": {...}}`, only reachable through lambda:InvokeFunction):
  build the usual objects (settings + secret, store, REST client), run the command and edit the
  deferred answer (PATCH /webhooks/{application_id}/{token}/messages/@original).
"""

from __future__ import annotations

import base64
import json
import logging
import os
from typing import Any

from cdp.entry import interactions

log = logging.getLogger("cdp.entry.interactions")


def _response(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"Content-Type": "application/json"},
            "body": json.dumps(body), "isBase64Encoded": False}


def _body(event: dict[str, Any]) -> bytes:
    raw = event.get("body") or ""
    if event.get("isBase64Encoded"):
        return base64.b64decode(raw)
    return raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)


def dispatch(job: interactions.Job, context: Any) -> None:
    """Run `job` in a new asynchronous invocation of this very function (tests replace this)."""
    import boto3  # only for commands, never on the PING path

    function = getattr(context, "invoked_function_arn", None) or os.environ["AWS_LAMBDA_FUNCTION_NAME"]
    boto3.client("lambda").invoke(FunctionName=function, InvocationType="Event",
                                  Payload=json.dumps(job.to_event()).encode())


def run_job(job: interactions.Job) -> str:
    """The asynchronous half: run the command over the usual objects and edit the deferred answer.

    Never raises: a failed asynchronous invocation would be retried by Lambda (the template also sets
    MaximumRetryAttempts 0), running `/cdp keepalive` again for an edit that failed. The failure is
    logged (type only: the interaction token is in the URL) and returned."""
    from cdp.entry.api.ops import RuntimeOperations
    from cdp.entry.api.runtime import Runtime
    from cdp.entry.aws import runtime as rt
    from cdp.entry.aws.presence import PresenceGateway

    try:
        settings, stores, rest, service = rt.objects()
        runtime = Runtime(settings, service, stores=stores)
        if stores.presence is not None:  # /cdp status: the ECS listener's published presence
            runtime.gateway = PresenceGateway(stores.presence)
        return rt.run(interactions.complete(job, RuntimeOperations(runtime, stores), rest))
    except Exception as exc:  # noqa: BLE001 - see above
        log.error("slash command /cdp %s failed: %s", job.command, type(exc).__name__)
        return f"failed: {type(exc).__name__}"


def handler(event: dict[str, Any], context: Any) -> dict[str, Any] | str:
    job = interactions.Job.from_event(event)
    if job is not None:
        return run_job(job)
    outcome = interactions.handle(_body(event), event.get("headers") or {},
                                  public_key=os.environ.get("DISCORD_PUBLIC_KEY", ""),
                                  guild_id=os.environ.get("GUILD_ID", ""))
    if outcome.job is not None:
        try:
            dispatch(outcome.job, context)
        except Exception as exc:
            log.error("could not start the slash command: %s", type(exc).__name__)
            return _response(200, interactions.message(
                f"❌ Could not start `/cdp {outcome.job.command}` ({type(exc).__name__}); see the log."))
    return _response(outcome.status, outcome.body)
