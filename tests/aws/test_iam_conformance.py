"""IAM conformance: every AWS call each component makes in a distributed run (the Lambda handlers fed
their events, the listener as its own `cdp listener` process, all on moto + the fake Discord) is
evaluated against that component's role in template.yaml, transformed offline by aws-sam-translator
with its ARNs resolved. Any call the role would deny fails the test; permissions granted but never
used are printed. A copy of the template without one needed permission must fail."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import httpx
import pytest
from cdp.entry.aws import runtime

from tests.support import aws as support
from tests.support import iam, iam_recorder
from tests.support.iam import Names

API_KEY = "sk-cdp-sample-key"  # the key in events/*.json
COMPONENTS = {"api", "stream", "cleanup", "keepalive", "replies_stream", "interactions", "listener"}


def api_event(path: str, method: str = "GET", body: str | None = None) -> dict:
    event = support.load_event("api_models.json")
    event["path"] = event["requestContext"]["path"] = path
    event["httpMethod"] = event["requestContext"]["httpMethod"] = method
    event["pathParameters"] = {"proxy": path.lstrip("/")}
    event["headers"]["proxy-secret"] = API_KEY  # the original's /api/* routes
    event["multiValueHeaders"]["proxy-secret"] = [API_KEY]
    if body is not None:
        event["body"], event["isBase64Encoded"] = body, False
        event["headers"]["Content-Type"] = "application/json"
        event["multiValueHeaders"]["Content-Type"] = ["application/json"]
    return event


def fresh() -> None:
    """A new execution environment: objects, event loop and the secret cache forgotten."""
    from aws_lambda_powertools.utilities import parameters

    runtime.reset()
    parameters.clear_caches()


def stream_calls(app, requests: list[tuple[str, dict | Callable[[list[bytes]], dict]]]) -> list[tuple[int, bytes]]:
    """POSTs to the stream function's ASGI app, in one event loop (as uvicorn runs it). A body may be a
    function of the answers so far (the next turn of a conversation)."""
    async def go():
        transport = httpx.ASGITransport(app=app)
        out = []
        async with httpx.AsyncClient(transport=transport, base_url="http://lwa") as client:
            for path, body in requests:
                if callable(body):
                    body = body([content for _, content in out])
                r = await client.post(path, json=body, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
                out.append((r.status_code, r.content))
        return out
    return asyncio.run(go())


@pytest.fixture(scope="module")
def recorded(request, tmp_path_factory):
    """(calls, names) of one run of the scenario. One test uses it, so under xdist one worker pays for it
    while the other runs other tests."""
    return record(request, tmp_path_factory)


def record(request, tmp_path_factory):
    """Run every component once over the same tables; returns (calls, names)."""
    from tests.ops.conftest import Signer

    moto, tables, fake = (request.getfixturevalue(n) for n in ("moto", "tables", "fake"))

    prefix, tnames = tables
    cfg = fake.config
    log = tmp_path_factory.mktemp("iam") / "calls.jsonl"
    bucket = f"cdp-iam-{prefix}".lower()[:60]
    moto.client("s3").create_bucket(Bucket=bucket)
    secret_arn = support.create_secret(moto, f"cdp-iam-{prefix}", {
        "USER_AUTHORIZATION": ",".join(cfg.user_tokens), "BOT_TOKEN": cfg.bot_token,
        "PROXY_SECRET": API_KEY, "NOTIFY_TELEGRAM_BOT_TOKEN": ""})
    signer = Signer()
    names = Names(tables={"RepliesTable": tnames["replies"], "StateTable": tnames["state"]},
                  buckets={"ImagesBucket": bucket}, secrets={"AppSecret": secret_arn},
                  functions={"InteractionsFunction": "cdp-test"})
    env = {**support.aws_env(moto, prefix), "CDP_SECRET_ID": secret_arn, "GUILD_ID": cfg.guild_id,
           "COZE_BOT_ID": cfg.coze_bot_ids[0], "DISCORD_API_BASE": fake.base_url, "CHANNEL_AUTO_DEL_TIME": "1", "REQUEST_OUT_TIME": "20",
           "STREAM_REQUEST_OUT_TIME": "20", "REPLY_IDLE_TIMEOUT": "3", "BLOB_BUCKET": bucket,
           "POWERTOOLS_METRICS_NAMESPACE": "CozeDiscordProxyTest", "DISCORD_PUBLIC_KEY": signer.public_key}
    iam_recorder.install(log)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {**env, **support.FAKE_CREDENTIALS}.items():
            mp.setenv(k, v)
        for k in ("BOT_TOKEN", "USER_AUTHORIZATION", "PROXY_SECRET", "CHANNEL_ID"):
            mp.delenv(k, raising=False)  # the secret provides them, as on AWS
        port = support.free_port()
        # The listener as ECS runs it (listener/entry.py, the image's CMD), given what the task definition
        # gives it: BOT_TOKEN (its only ECS secret), no secret id, no user token.
        lenv = {k: v for k, v in env.items() if k not in ("CDP_SECRET_ID", "BLOB_BUCKET")}
        base = {k: v for k, v in os.environ.items() if not k.startswith(("CDP_", "AWS_"))}
        proc = subprocess.Popen(
            [sys.executable, str(support.ROOT / "listener" / "entry.py")],
            env={**base, **lenv, **support.FAKE_CREDENTIALS, "BOT_TOKEN": cfg.bot_token, "CDP_HEALTH_PORT": str(port),
                 "CDP_FAILED_EXIT_DELAY": "0", **iam_recorder.subprocess_env(log, "listener")},
            cwd=str(tmp_path_factory.mktemp("listener")), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            try:
                support.wait_until(lambda: proc.poll() is not None or support.healthz(port)[0] == 200, timeout=30)
            finally:
                if proc.poll() is not None:
                    raise AssertionError("the listener exited: " + proc.stdout.read().decode(errors="replace")[-3000:])
            run_scenario(fake, moto, bucket, signer, mp)
        finally:
            proc.terminate()
            proc.wait(15)
            fresh()
    calls = iam_recorder.read(log)
    return calls, names


def due_channel(fake) -> str:
    """A temporary channel in Discord and in the registry, due for deletion (made outside any component)."""
    from cdp.adapters.store.dynamodb import DynamoChannelRegistry
    from cdp.domain.model import TempChannel
    from cdp.entry.bootstrap import make_rest
    from cdp.settings import Settings, load_settings

    async def make() -> str:
        rest = make_rest(load_settings(**support.discord_env(fake)))
        try:
            cid = (await rest.create_channel(fake.config.guild_id, "cdp-chat-iam", type=0))["id"]
        finally:
            await rest.aclose()
        await DynamoChannelRegistry(Settings(_env_file=None)).add(
            TempChannel(cid, fake.config.guild_id, time.time() - 60, time.time() - 1))
        return cid
    with iam_recorder.component(None):
        return asyncio.run(make())


def sticky_conversation(fake, mp) -> None:
    """The stream function with CONVERSATION_MODE=sticky: a two-turn conversation (the second turn continues
    in the first one's channel), its first answer ended by the listener's presence (no buttons: idle
    completion), then another conversation, which, over CONVERSATION_CHANNEL_BUDGET=1, releases the first
    one. Every chat takes an account lease (ACCOUNT_MAX_CONCURRENT); each sticky step is a conditional write
    under pk "sticky"."""
    from tests.support.stack import prompt_messages

    m1, m2, m3 = (f"iam-sticky-{i}-{uuid.uuid4().hex[:8]}" for i in range(3))
    mp.setenv("CONVERSATION_MODE", "sticky")
    mp.setenv("CONVERSATION_CHANNEL_BUDGET", "1")
    mp.setenv("ACCOUNT_MIN_GAP", "0.2")
    idle = os.environ["REPLY_IDLE_TIMEOUT"]
    mp.setenv("REPLY_IDLE_TIMEOUT", "1")  # the first answer has no buttons: it ends by idle time
    fresh()
    try:
        with iam_recorder.component("stream"):
            app = support.load_handler_module("stream").app
            first = [{"role": "user", "content": f"{m1} hello [[sim:no_buttons]]"}]

            def second(answers: list[bytes]) -> dict:
                a1 = json.loads(answers[0])["choices"][0]["message"]["content"]
                return {"model": "gpt-4o", "stream": True, "messages": [
                    *first, {"role": "assistant", "content": a1}, {"role": "user", "content": f"{m2} and then?"}]}
            (s1, b1), (s2, b2), (s3, b3) = stream_calls(app, [
                ("/v1/chat/completions", {"model": "gpt-4o", "messages": first}),
                ("/v1/chat/completions", second),
                ("/v1/chat/completions", {"model": "gpt-4o",
                                          "messages": [{"role": "user", "content": f"{m3} another one"}]})])
            assert s1 == 200, b1[-300:]
            assert s2 == 200 and b2.rstrip().endswith(b"data: [DONE]"), b2[-300:]
            assert s3 == 200, b3[-300:]
    finally:
        for k in ("CONVERSATION_MODE", "CONVERSATION_CHANNEL_BUDGET", "ACCOUNT_MIN_GAP"):
            mp.delenv(k, raising=False)
        mp.setenv("REPLY_IDLE_TIMEOUT", idle)
    (p1,), (p2,), (p3,) = (prompt_messages(fake, m) for m in (m1, m2, m3))
    assert p2["channel_id"] == p1["channel_id"] and m1 not in p2["content"]  # continued: only the new turn
    assert p3["channel_id"] != p1["channel_id"]
    assert p1["channel_id"] in {c["id"] for c in fake.deleted_channels()}  # released for the budget


def run_scenario(fake, moto, bucket, signer, mp) -> None:
    ctx = support.LambdaContext
    # -- stream function: a streamed chat and an image (chat/image routes on AWS)
    fresh()
    with iam_recorder.component("stream"):
        app = support.load_handler_module("stream").app
        (status, body), (istatus, ibody) = stream_calls(app, [
            ("/v1/chat/completions", {"model": "gpt-4o", "stream": True,
                                      "messages": [{"role": "user", "content": "hello iam"}]}),
            ("/v1/images/generations", {"prompt": "a red fox [[sim:image_attachment]]", "n": 1})])
        assert status == 200 and body.rstrip().endswith(b"data: [DONE]"), body[-300:]
        assert istatus == 200, ibody
        url = json.loads(ibody)["data"][0]["url"]
    sticky_conversation(fake, mp)
    small = url.rsplit("/", 1)[1]
    big = "f" * 32 + ".png"
    moto.client("s3").put_object(Bucket=bucket, Key=big, Body=b"\x89PNG" + b"\0" * 4_100_000,
                                 ContentType="image/png")
    # -- API function: buffered routes
    fresh()
    with iam_recorder.component("api"):
        mod = support.load_handler_module("api")
        for path in ["/v1/models", "/healthz", "/api/status", f"/files/{small}", f"/files/{big}",
                     "/api/channel/del/all/cdp"]:
            resp = mod.handler(api_event(path), ctx(function_name="api"))
            assert resp["statusCode"] in (200, 307), (path, resp["statusCode"], resp.get("body", "")[:300])
    # -- replies-stream consumer
    fresh()
    with iam_recorder.component("replies_stream"):
        mod = support.load_handler_module("replies_stream")
        assert mod.handler(support.load_event("replies_stream.json"), ctx(function_name="rs")) == \
            {"batchItemFailures": []}
    # -- keepalive, with an empty CHANNEL_ID (creates and registers a temporary channel)
    fresh()
    with iam_recorder.component("keepalive"):
        mod = support.load_handler_module("keepalive")
        result = mod.handler(support.load_event("keepalive_scheduled.json"), ctx(function_name="keepalive"))
        assert result.get("sent") == 1, result
    due_channel(fake)  # what a request left: cleanup deletes it
    # -- cleanup
    fresh()
    with iam_recorder.component("cleanup"):
        mod = support.load_handler_module("cleanup")
        result = mod.handler(support.load_event("cleanup_scheduled.json"), ctx(function_name="cleanup"))
        assert result.get("deleted", 0) >= 1, result
    # -- interactions: a signed command starts the asynchronous half (lambda:InvokeFunction), which
    # runs each command and edits the deferred answer
    fresh()
    with iam_recorder.component("interactions"):
        mod = support.load_handler_module("interactions")
        interaction = fake.issue_interaction("cdp", "cleanup")
        raw, headers = signer.signed(interaction)
        event = api_event("/interactions", "POST", raw.decode())
        event["headers"].update(headers)
        mod.handler(event, ctx(function_name="cdp-test"))  # moto has no such function: answered, not raised
        from cdp.entry import interactions

        for command in ("status", "cleanup", "keepalive"):
            it = fake.issue_interaction("cdp", command)
            job = interactions.Job(command, str(it["application_id"]), it["token"])
            mod.handler(job.to_event(), ctx(function_name="cdp-test"))


def check_every_component_ran(recorded):
    calls, _ = recorded
    assert {c["component"] for c in calls} == COMPONENTS


def check_the_features_were_exercised(recorded):
    """The scenario reached the calls the roles must allow: the stream function's account leases (every
    chat), sticky conversations (read, conditional lease, write, conditional delete, the budget's scan of
    the partition) and the listener presence it waits on; the listener's heartbeat."""
    calls, _ = recorded
    made = {(c["component"], c["operation"], tuple(c.get("leading_keys") or ())) for c in calls
            if c["service"] == "dynamodb"}
    for op in ("GetItem", "UpdateItem"):
        assert ("stream", op, ("lease#account",)) in made, op
    for op in ("GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query"):
        assert ("stream", op, ("sticky",)) in made, op
    assert ("stream", "Query", ("listener",)) in made
    assert ("listener", "PutItem", ("listener",)) in made


def check_every_resource_used_is_declared(recorded):
    """Each table, bucket and secret a call names is one the template declares (by its physical name)."""
    calls, names = recorded
    tables = {c["table"] for c in calls if c["service"] == "dynamodb"}
    assert tables <= set(names.tables.values()), tables
    assert not [c for c in calls if c["service"] == "dynamodb" and c.get("index")]  # no index declared
    assert {c["bucket"] for c in calls if c["service"] == "s3"} <= set(names.buckets.values())
    assert {c["secret"] for c in calls if c["service"] == "secretsmanager"} <= set(names.secrets.values())
    assert {c["service"] for c in calls} <= {"dynamodb", "s3", "secretsmanager", "lambda"}


def check_every_call_is_allowed_by_its_role(recorded):
    calls, names = recorded
    verdict = iam.check(calls, iam.transform(), names)
    print(verdict.report())  # the unused grants, for the reader of `pytest -s`
    assert not verdict.denied, verdict.report()


def check_removing_a_needed_permission_is_caught(recorded):
    """The check can fail: from a copy of the template, the listener's presence PutItem removed, and the
    stream function's account-lease and sticky-conversation reads (one transform for both)."""
    calls, names = recorded
    template = copy.deepcopy(support.load_template())
    statements = template["Resources"]["ListenerTaskRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    presence = [s for s in statements if s["Action"] == "dynamodb:PutItem"
                and s["Resource"] == {"Fn::GetAtt": ["StateTable", "Arn"]}]
    assert len(presence) == 1
    statements.remove(presence[0])
    stream = template["Resources"]["StreamFunction"]["Properties"]["Policies"][0]["Statement"]
    leases = [s for s in stream if "lease#account" in json.dumps(s.get("Condition"))]
    assert len(leases) == 1
    stream.remove(leases[0])
    verdict = iam.check(calls, iam.transform(template), names)
    denied = {(c, call["operation"], tuple(call.get("leading_keys") or ())) for c, call in verdict.denied}
    assert ("listener", "PutItem", ("listener",)) in denied, verdict.report()
    for key in ("lease#account", "sticky"):
        assert ("stream", "GetItem", (key,)) in denied, verdict.report()


def test_iam_conformance(recorded):
    """The scenario once, then each check (one test: xdist runs the scenario on one worker only)."""
    check_every_component_ran(recorded)
    check_the_features_were_exercised(recorded)
    check_every_resource_used_is_declared(recorded)
    check_every_call_is_allowed_by_its_role(recorded)
    check_removing_a_needed_permission_is_caught(recorded)


def test_narrowing_is_enforced():
    """A call outside a statement's dynamodb:LeadingKeys is denied (the listener may only publish its
    presence, not write a channel entry)."""
    names = Names(tables={"RepliesTable": "r", "StateTable": "s"}, secrets={"AppSecret": "arn:aws:secretsmanager:x"})
    forged = {"component": "listener", "service": "dynamodb", "operation": "PutItem",
              "table": names.tables["StateTable"], "leading_keys": ["channel"]}
    verdict = iam.check([forged], iam.transform(), names)
    assert len(verdict.denied) == 1
