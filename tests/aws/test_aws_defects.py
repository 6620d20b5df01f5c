"""The defects only a real AWS deployment would show (issue 11), each reproduced offline: on moto, with the
Lambda handlers fed their events, and against template.yaml as CloudFormation sees it."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from cdp.entry.aws import runtime

from tests.support import aws as support
from tests.support import iam

API_KEY = "sk-cdp-sample-key"


@pytest.fixture
def lambda_env(moto, tables, fake, monkeypatch):
    """Environment as on Lambda (secret in moto's Secrets Manager); no listener runs."""
    from aws_lambda_powertools.utilities import parameters

    prefix, _ = tables
    cfg = fake.config
    secret = support.create_secret(moto, f"cdp-defects-{support.unique_prefix()}", {
        "USER_AUTHORIZATION": ",".join(cfg.user_tokens), "BOT_TOKEN": cfg.bot_token, "PROXY_SECRET": API_KEY})
    env = {**support.aws_env(moto, prefix), "CDP_SECRET_ID": secret, "GUILD_ID": cfg.guild_id,
           "COZE_BOT_ID": cfg.coze_bot_ids[0], "DISCORD_API_BASE": fake.base_url}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("BOT_TOKEN", "USER_AUTHORIZATION", "PROXY_SECRET", "CHANNEL_ID"):
        monkeypatch.delenv(k, raising=False)
    runtime.reset()
    parameters.clear_caches()
    yield env
    runtime.reset()
    parameters.clear_caches()


def event(path: str) -> dict:
    e = support.load_event("api_models.json")
    e["path"] = e["requestContext"]["path"] = path
    e["pathParameters"] = {"proxy": path.lstrip("/")}
    return e


def ctx(name: str = "api") -> support.LambdaContext:
    return support.LambdaContext(function_name=name)


# -- /healthz and /api/status read the listener's presence -------------------------------------------
def test_healthz_on_aws_follows_the_listener_presence(lambda_env):
    from cdp.adapters.store.dynamodb.state import DynamoListenerPresence
    from cdp.settings import Settings

    mod = support.load_handler_module("api")
    resp = mod.handler(support.load_event("api_healthz.json"), ctx())
    body = json.loads(resp["body"])
    assert resp["statusCode"] == 503, body  # no listener has ever published: not "ready"
    assert body["gateway"]["ready"] is False and "listener" in body["reason"]
    status = mod.handler(event("/api/status"), ctx())
    assert json.loads(status["body"])["status"] == "degraded"

    presence = DynamoListenerPresence(Settings(_env_file=None), instance_id="ecs-task-1")
    runtime.run(presence.publish(True, 1_700_000_000.0))  # on the handlers' loop
    resp = mod.handler(support.load_event("api_healthz.json"), ctx())
    body = json.loads(resp["body"])
    assert resp["statusCode"] == 200 and body["gateway"]["since"] == 1_700_000_000.0
    assert json.loads(mod.handler(event("/api/status"), ctx())["body"])["gateway"]["ready"] is True

    runtime.run(presence.publish(False, 1_700_000_000.0))  # the listener lost its session
    assert mod.handler(support.load_event("api_healthz.json"), ctx())["statusCode"] == 503


# -- the stream function is built lazily --------------------------------------------------------------
def test_stream_function_without_configuration_answers_an_openai_503(lambda_env, monkeypatch):
    monkeypatch.delenv("CDP_SECRET_ID")  # no keys, no Discord settings: the app cannot be built
    for k in ("GUILD_ID", "COZE_BOT_ID"):
        monkeypatch.delenv(k)
    mod = support.load_handler_module("stream")  # importing must not fail (uvicorn would exit: a 502)

    async def call():
        transport = httpx.ASGITransport(app=mod.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://lwa") as client:
            ready = await client.get("/")  # the Web Adapter's readiness check
            chat = await client.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": []},
                                     headers={"Authorization": f"Bearer {API_KEY}"})
            return ready, chat
    ready, chat = asyncio.run(call())
    assert ready.status_code == 200
    assert chat.status_code == 503 and chat.headers["retry-after"] == "60"
    error = chat.json()["error"]
    assert error["code"] == "not_configured" and error["type"] == "server_error"

    # once configured, the next request builds the app (no new execution environment needed)
    monkeypatch.setenv("CDP_SECRET_ID", lambda_env["CDP_SECRET_ID"])
    for k in ("GUILD_ID", "COZE_BOT_ID"):
        monkeypatch.setenv(k, lambda_env[k])
    runtime.reset()

    async def models():
        transport = httpx.ASGITransport(app=mod.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://lwa") as client:
            return await client.get("/v1/models", headers={"Authorization": f"Bearer {API_KEY}"})
    assert asyncio.run(models()).status_code == 200


# -- interactions: the follow-up never raises (Lambda would retry it) ------------------------------------
def test_interactions_follow_up_errors_are_caught(lambda_env, fake):
    import logging

    from cdp.entry import interactions

    mod = support.load_handler_module("interactions")
    token = "aW50ZXJhY3Rpb246" + "9" * 19 + "unknown" + "x" * 40  # Discord answers 404 to the edit
    job = interactions.Job("status", fake.config.application_id, token)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("cdp.entry.interactions")
    logger.addHandler(handler)
    try:
        out = mod.handler(job.to_event(), ctx("interactions"))  # no exception: no asynchronous retry
    finally:
        logger.removeHandler(handler)
    assert isinstance(out, str) and out.startswith("failed:")
    logs = "\n".join(r.getMessage() for r in records)
    assert "/cdp status failed" in logs and token not in logs


def test_interactions_async_retries_are_off_in_the_template():
    cfn = iam.transform()
    configs = [r["Properties"] for r in cfn["Resources"].values() if r["Type"] == "AWS::Lambda::EventInvokeConfig"]
    interactions_cfg = [c for c in configs if c["FunctionName"] == {"Ref": "InteractionsFunction"}]
    assert interactions_cfg and interactions_cfg[0]["MaximumRetryAttempts"] == 0


# -- large images: a presigned redirect, never the Lambda body ---------------------------------------------
def test_large_image_is_redirected_to_a_presigned_s3_url(lambda_env, moto, monkeypatch):
    bucket = f"cdp-big-{support.unique_prefix()}"
    moto.client("s3").create_bucket(Bucket=bucket)
    monkeypatch.setenv("BLOB_BUCKET", bucket)
    big, small = "a" * 32 + ".png", "b" * 32 + ".png"
    big_bytes = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 18_000  # 4.6 MB: over the 6 MB base64 limit
    s3 = moto.client("s3")
    s3.put_object(Bucket=bucket, Key=big, Body=big_bytes, ContentType="image/png")
    s3.put_object(Bucket=bucket, Key=small, Body=b"\x89PNG small", ContentType="image/png")
    mod = support.load_handler_module("api")
    resp = mod.handler(event(f"/files/{big}"), ctx())
    assert resp["statusCode"] == 307 and len(resp["body"]) < 1000
    location = {k.lower(): v for k, v in resp["headers"].items()}["location"]
    assert location.startswith(moto.url) and "X-Amz-Expires=300" in location and "Signature" in location
    assert httpx.get(location).content == big_bytes  # the link works, without our Lambda
    resp = mod.handler(event(f"/files/{small}"), ctx())
    assert resp["statusCode"] == 200  # small images stay inline (one GetObject, no redirect)


# -- template: least privilege, secrets per container ------------------------------------------------------
def test_no_crud_policy_templates_and_no_unused_dynamodb_actions():
    t = support.load_template()
    text = json.dumps(t)
    for banned in ("DynamoDBCrudPolicy", "DynamoDBReadPolicy", "dynamodb:Scan", "dynamodb:BatchWriteItem",
                   "dynamodb:*", '"Resource": "*"'):
        assert banned not in text, banned


def test_listener_container_gets_only_the_secret_it_reads():
    t = support.load_template()
    (container,) = t["Resources"]["ListenerTaskDefinition"]["Properties"]["ContainerDefinitions"]
    assert [s["Name"] for s in container["Secrets"]] == ["BOT_TOKEN"]
