"""Every Lambda handler, fed the events/*.json files, against the moto server (over HTTP), the
fake Discord and a `cdp listener` process writing Coze replies to DynamoDB."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from cdp.adapters.store.dynamodb import DynamoChannelRegistry
from cdp.adapters.store.dynamodb.state import DynamoPromptLedger
from cdp.domain.model import TempChannel
from cdp.entry.aws import runtime
from cdp.settings import Settings

from tests.support import aws as support

API_KEY = "sk-cdp-sample-key"  # the key in events/*.json


@pytest.fixture(scope="module")
def stack(moto, tables, fake, tmp_path_factory):
    """Fake Discord + secret in (moto) Secrets Manager + a listener process; env as on Lambda."""
    prefix, _ = tables
    cfg = fake.config
    with pytest.MonkeyPatch.context() as mp:
        secret_arn = support.create_secret(moto, f"cdp-{prefix}", {
            "USER_AUTHORIZATION": ",".join(cfg.user_tokens), "BOT_TOKEN": cfg.bot_token,
            "PROXY_SECRET": API_KEY, "NOTIFY_TELEGRAM_BOT_TOKEN": ""})
        env = {**support.aws_env(moto, prefix), "CDP_SECRET_ID": secret_arn, "GUILD_ID": cfg.guild_id,
               "COZE_BOT_ID": cfg.coze_bot_ids[0], "DISCORD_API_BASE": fake.base_url,
               "CHANNEL_AUTO_DEL_TIME": "5", "REQUEST_OUT_TIME": "20", "STREAM_REQUEST_OUT_TIME": "20",
               "REPLY_IDLE_TIMEOUT": "3", "POWERTOOLS_METRICS_NAMESPACE": "CozeDiscordProxyTest"}
        for k, v in {**env, **support.FAKE_CREDENTIALS}.items():
            mp.setenv(k, v)
        for k in ("BOT_TOKEN", "USER_AUTHORIZATION", "PROXY_SECRET", "CHANNEL_ID"):
            mp.delenv(k, raising=False)  # the secret provides them
        port = support.free_port()
        proc = support.start_listener_process({**env, **support.FAKE_CREDENTIALS, **support.discord_env(fake)},
                                              tmp_path_factory.mktemp("listener"), port)
        try:
            support.wait_until(lambda: support.healthz(port)[0] == 200, timeout=30)
            ds = Settings(CDP_TABLE_PREFIX=prefix, AWS_ENDPOINT_URL=moto.url, _env_file=None)
            yield {"fake": fake, "env": env, "registry": DynamoChannelRegistry(ds), "moto": moto}
        finally:
            proc.terminate()
            proc.wait(15)
            runtime.reset()


@pytest.fixture(autouse=True)
def fresh_runtime(stack):
    runtime.reset()
    yield
    runtime.reset()


def ctx(name="cdp-test"):
    return support.LambdaContext(function_name=name)


def body_of(resp: dict) -> dict:
    return json.loads(resp["body"])


def test_api_models(stack):
    mod = support.load_handler_module("api")
    resp = mod.handler(support.load_event("api_models.json"), ctx("api"))
    assert resp["statusCode"] == 200
    ids = [m["id"] for m in body_of(resp)["data"]]
    assert "gpt-4o" in ids
    headers = {k.lower(): v for k, v in (resp.get("headers") or {}).items()}
    assert headers.get("x-request-id", "").startswith("req_")


def test_api_rejects_a_wrong_key(stack):
    mod = support.load_handler_module("api")
    event = support.load_event("api_models.json")
    event["headers"]["Authorization"] = event["multiValueHeaders"]["Authorization"][0] = "Bearer nope"
    event["multiValueHeaders"]["Authorization"] = ["Bearer nope"]
    resp = mod.handler(event, ctx("api"))
    assert resp["statusCode"] == 401
    assert body_of(resp)["error"]["code"] == "invalid_api_key"


def test_api_healthz(stack):
    mod = support.load_handler_module("api")
    resp = mod.handler(support.load_event("api_healthz.json"), ctx("api"))
    assert resp["statusCode"] == 200 and body_of(resp)["store"] == "dynamodb"


def test_api_chat_non_stream_end_to_end(stack):
    from cdp.adapters.store.dynamodb import STATS

    mod = support.load_handler_module("api")
    before = STATS.snapshot()
    resp = mod.handler(support.load_event("api_chat.json"), ctx("api"))
    assert resp["statusCode"] == 200, resp["body"]
    used = {k: STATS.snapshot()[k] - before[k] for k in before}
    print("dynamodb per chat request (answering side):", used)
    # writes: rate-limit counter, account lease taken and given back (fair queue), account claim (LRU),
    # registry add, prompt ledger, delete schedule; reads: health, the lease, presence, polls
    assert used["writes"] <= 7 and used["reads"] <= 62
    body = body_of(resp)
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"]
    assert body["choices"][0]["finish_reason"] == "stop"
    # the temporary channel is in the registry (deleted later by the API task, the stream consumer
    # or the cleanup schedule)
    channels = asyncio.run(stack["registry"].all())
    assert any(c.channel_id in {ch["id"] for ch in stack["fake"].created_channels()} for c in channels)
    # who posted the prompt is in the ledger (for the replies-stream cooldowns): a fingerprint, no token
    from cdp.domain.secrets import fingerprint

    fake = stack["fake"]
    prompts = [m for ch in fake.created_channels() for m in fake.messages(ch["id"])
               if m["author"]["id"] in fake.config.user_tokens.values()]
    ledger = DynamoPromptLedger(Settings(_env_file=None))
    entries = [e for m in prompts if (e := asyncio.run(ledger.lookup(m["id"])))]
    assert entries and entries[-1]["account"] in {fingerprint(t) for t in fake.config.user_tokens}
    assert entries[-1]["coze_bot_id"] == fake.config.coze_bot_ids[0]


def test_api_not_configured_answers_503(stack, monkeypatch):
    monkeypatch.delenv("CDP_SECRET_ID")
    for k in ("GUILD_ID", "COZE_BOT_ID"):
        monkeypatch.delenv(k)
    mod = support.load_handler_module("api")
    resp = mod.handler(support.load_event("api_models.json"), ctx("api"))
    assert resp["statusCode"] == 503
    assert body_of(resp)["error"]["code"] == "not_configured"


def test_stream_function_streams_sse(stack):
    """The stream function's ASGI app, driven with the request the Web Adapter derives from the event."""
    mod = support.load_handler_module("stream")
    event = support.load_event("stream_chat.json")

    async def call():
        transport = httpx.ASGITransport(app=mod.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://lwa") as client, \
                client.stream(event["httpMethod"], event["path"], headers=event["headers"],
                              content=event["body"].encode(), timeout=30) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            return [line async for line in r.aiter_lines() if line.startswith("data: ")]

    lines = asyncio.run(call())
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    assert text
    assert chunks[-1]["usage"]["completion_tokens"] > 0


def test_cleanup_deletes_due_channels(stack):
    fake, registry = stack["fake"], stack["registry"]

    async def make_channel():
        from cdp.entry.bootstrap import make_rest
        from cdp.settings import load_settings

        rest = make_rest(load_settings(**support.discord_env(fake)))
        try:
            return (await rest.create_channel(fake.config.guild_id, "cdp-chat-cleanup-test", type=0))["id"]
        finally:
            await rest.aclose()

    channel_id = asyncio.run(make_channel())
    asyncio.run(registry.add(TempChannel(channel_id, fake.config.guild_id, time.time() - 60, time.time() - 1)))
    mod = support.load_handler_module("cleanup")
    result = mod.handler(support.load_event("cleanup_scheduled.json"), ctx("cleanup"))
    assert result["deleted"] >= 1
    assert channel_id in {c["id"] for c in fake.deleted_channels()}
    assert channel_id not in {c.channel_id for c in asyncio.run(registry.all())}


def test_keepalive_posts_to_each_coze_bot(stack, monkeypatch):
    fake = stack["fake"]
    channel = fake.config.channel_id
    monkeypatch.setenv("CHANNEL_ID", channel)
    mod = support.load_handler_module("keepalive")
    result = mod.handler(support.load_event("keepalive_scheduled.json"), ctx("keepalive"))
    assert result == {"sent": 1, "failed": []}
    coze = fake.config.coze_bot_ids[0]
    posted = [m for m in fake.messages(channel) if m["content"] == f"<@{coze}> keepalive"]
    assert posted and posted[-1]["author"]["id"] in fake.config.user_tokens.values()


def test_keepalive_disabled_is_a_no_op(stack, monkeypatch):
    monkeypatch.setenv("COZE_BOT_STAY_ACTIVE_ENABLE", "0")
    mod = support.load_handler_module("keepalive")
    assert mod.handler(support.load_event("keepalive_scheduled.json"), ctx("keepalive"))["sent"] == 0


def test_replies_stream_schedules_deletion_and_emits_metrics(stack, capsys):
    registry = stack["registry"]
    event = support.load_event("replies_stream.json")
    completed_channel = event["Records"][2]["dynamodb"]["NewImage"]["channel_id"]["S"]
    error_channel = event["Records"][3]["dynamodb"]["NewImage"]["channel_id"]["S"]
    already = time.time() + 3
    asyncio.run(registry.add(TempChannel(completed_channel, "1100000000000000001", time.time(), None, "r1")))
    asyncio.run(registry.add(TempChannel(error_channel, "1100000000000000001", time.time(), already, "r2")))
    capsys.readouterr()
    mod = support.load_handler_module("replies_stream")
    t0 = time.time()
    resp = mod.handler(event, ctx("replies-stream"))
    assert resp == {"batchItemFailures": []}
    got = {c.channel_id: c for c in asyncio.run(registry.all())}
    assert t0 + 4 <= got[completed_channel].delete_at <= time.time() + 6  # CHANNEL_AUTO_DEL_TIME=5
    assert got[error_channel].delete_at == pytest.approx(already)  # never postponed
    out = capsys.readouterr().out
    emf = [json.loads(line) for line in out.splitlines() if '"_aws"' in line]
    assert emf, out
    metrics = emf[-1]
    value = lambda k: sum(metrics[k]) if isinstance(metrics[k], list) else metrics[k]
    assert value("RepliesCompleted") == 2 and value("ChannelsScheduledForDeletion") == 1
    assert value("CozeError_user_limit") == 1


def test_replies_stream_reports_bad_records(stack):
    event = support.load_event("replies_stream.json")
    bad = json.loads(json.dumps(event["Records"][2]))
    del bad["dynamodb"]["NewImage"]["version"]
    bad["dynamodb"]["SequenceNumber"] = "000000000000000000999"
    mod = support.load_handler_module("replies_stream")
    resp = mod.handler({"Records": [event["Records"][0], bad]}, ctx("replies-stream"))
    assert resp == {"batchItemFailures": [{"itemIdentifier": "000000000000000000999"}]}


def test_handlers_never_log_tokens(stack, capsys):
    fake = stack["fake"]
    mod = support.load_handler_module("api")
    mod.handler(support.load_event("api_models.json"), ctx("api"))
    mod = support.load_handler_module("cleanup")
    mod.handler(support.load_event("cleanup_scheduled.json"), ctx("cleanup"))
    out = capsys.readouterr()
    for token in (fake.config.bot_token, *fake.config.user_tokens):
        assert token not in out.out and token not in out.err


def test_api_without_keys_refuses_to_serve(stack, monkeypatch):
    """API Gateway is public: an empty PROXY_SECRET must not become an open proxy by accident."""
    secret = support.create_secret(stack["moto"], "cdp-no-keys", {
        "USER_AUTHORIZATION": ",".join(stack["fake"].config.user_tokens),
        "BOT_TOKEN": stack["fake"].config.bot_token, "PROXY_SECRET": ""})
    monkeypatch.setenv("CDP_SECRET_ID", secret)
    mod = support.load_handler_module("api")
    resp = mod.handler(support.load_event("api_models.json"), ctx("api"))
    assert resp["statusCode"] == 503
    error = body_of(resp)["error"]
    assert error["code"] == "not_configured" and "PROXY_SECRET" in error["message"]
    assert "ALLOW_OPEN_API" in error["message"]


def test_api_writes_the_metrics_as_emf_per_invocation(stack, capsys):
    """On Lambda the /metrics names leave as CloudWatch EMF lines, flushed by each invocation."""
    mod = support.load_handler_module("api")
    capsys.readouterr()
    resp = mod.handler(support.load_event("api_chat.json"), ctx("api"))
    assert resp["statusCode"] == 200, resp["body"]
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    by_name = {m["Name"]: doc for doc in emf for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    req = by_name["cdp_requests_total"]
    assert req["cdp_requests_total"] == [1.0]
    assert (req["route"], req["status"], req["model"]) == ("/v1/chat/completions", "200", "gpt-4o")
    assert req["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "CozeDiscordProxyTest"
    assert ["model", "route", "status", "service"] in req["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
    ttft, dur = by_name["cdp_time_to_first_token_seconds"], by_name["cdp_request_duration_seconds"]
    assert len(ttft["cdp_time_to_first_token_seconds"]) == 1 and ttft["model"] == "gpt-4o"
    assert 0 < ttft["cdp_time_to_first_token_seconds"][0] < dur["cdp_request_duration_seconds"][0]
    assert next(m["Unit"] for m in dur["_aws"]["CloudWatchMetrics"][0]["Metrics"]) == "Seconds"
    assert len(by_name["cdp_edit_latency_seconds"]["cdp_edit_latency_seconds"]) >= 1
    # nothing is flushed twice: the next invocation writes only its own request
    event = support.load_event("api_healthz.json")
    event["path"], event["pathParameters"] = "/api/status", {"proxy": "api/status"}
    resp = mod.handler(event, ctx("api"))
    assert resp["statusCode"] == 200, resp["body"]
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    names = [m["Name"] for doc in emf for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
    assert "cdp_time_to_first_token_seconds" not in names
    requests = [d for d in emf if "cdp_requests_total" in d]
    assert [(d["route"], d["status"], d["cdp_requests_total"]) for d in requests] == [("/api/status", "200", [1.0])]
    # /api/status publishes the pool's gauges too
    healthy = [d for d in emf if "cdp_accounts" in d and d["state"] == "healthy"]
    assert healthy and healthy[0]["cdp_accounts"] == [float(len(stack["fake"].config.user_tokens))]
    # /metrics on Lambda says where the metrics are
    event["path"], event["pathParameters"] = "/metrics", {"proxy": "metrics"}
    resp = mod.handler(event, ctx("api"))
    assert resp["statusCode"] == 404 and body_of(resp)["error"]["code"] == "metrics_not_here"


def test_cleanup_writes_the_status_gauges_as_emf(stack, capsys):
    """Nobody scrapes a Lambda: the every-minute cleanup writes accounts, bots and channels as EMF."""
    capsys.readouterr()
    mod = support.load_handler_module("cleanup")
    mod.handler(support.load_event("cleanup_scheduled.json"), ctx("cleanup"))
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    accounts = {d["state"]: d["cdp_accounts"] for d in emf if "cdp_accounts" in d}
    assert accounts == {"healthy": [float(len(stack["fake"].config.user_tokens))], "resting": [0.0], "dead": [0.0]}
    assert next(d for d in emf if "cdp_temp_channels_limit" in d)["cdp_temp_channels_limit"] == [500.0]
    assert next(d for d in emf if "cdp_bots_resting" in d)["cdp_bots_resting"] == [0.0]
    channels = {d["state"]: d["cdp_temp_channels"][0] for d in emf if "cdp_temp_channels" in d}
    assert sum(channels.values()) == len(asyncio.run(stack["registry"].all()))
