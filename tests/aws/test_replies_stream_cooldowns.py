"""Account/bot cooldowns applied by the replies-stream consumer (even when the client has gone).

The handler (functions/replies_stream/app.py) is fed events/replies_stream.json-style batches against
the moto server; who posted each prompt comes from the PromptLedger the answering side writes.
Plus the ledger's contract (memory and DynamoDB) and the service's "a failed record never fails".
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid

import pytest
from cdp.adapters.store.dynamodb.state import DynamoHealthStore, DynamoPromptLedger
from cdp.adapters.store.memory import MemoryHealthStore, MemoryPromptLedger
from cdp.domain.accounts import KIND_ACCOUNT, KIND_BOT, Health, next_reset
from cdp.domain.coze import BOT_LIMIT_TEXTS, USER_LIMIT_TEXTS
from cdp.domain.secrets import fingerprint
from cdp.entry.aws import runtime
from cdp.entry.aws.stream_consumer import Cooldowns, process_records
from cdp.settings import Settings

from tests.support import aws as support

TZ = "Asia/Shanghai"
RESET = "09:30"


def uid() -> str:
    return str(10**18 + uuid.uuid4().int % 10**17)


@pytest.fixture
def env(aws_env, monkeypatch, tables):
    for k, v in {"TZ": TZ, "DAILY_RESET_TIME": RESET, "CHANNEL_AUTO_DEL_TIME": "5",
                 "POWERTOOLS_METRICS_NAMESPACE": "CozeDiscordProxyTest"}.items():
        monkeypatch.setenv(k, v)
    runtime.reset()
    yield Settings(_env_file=None)
    runtime.reset()


def record(content: str, *, prompt_id: str, author_id: str = "1300000000000000001") -> dict:
    """A reply-part stream record shaped like events/replies_stream.json's, for a fresh prompt."""
    rec = copy.deepcopy(support.load_event("replies_stream.json")["Records"][3])
    image = rec["dynamodb"]["NewImage"]
    reply_id = uid()
    image["pk"]["S"] = rec["dynamodb"]["Keys"]["pk"]["S"] = prompt_id
    image["sk"]["S"] = rec["dynamodb"]["Keys"]["sk"]["S"] = reply_id
    image["channel_id"]["S"] = uid()
    image["author_id"]["S"] = author_id
    image["content"]["S"] = content
    rec["dynamodb"]["SequenceNumber"] = uid()
    return rec


def handle(records: list[dict]) -> dict:
    mod = support.load_handler_module("replies_stream")
    return mod.handler({"Records": records}, support.LambdaContext(function_name="replies-stream"))


def emf_metrics(out: str) -> dict:
    lines = [json.loads(line) for line in out.splitlines() if '"_aws"' in line]
    assert lines, out
    m = lines[-1]
    return {k: (sum(v) if isinstance(v, list) else v) for k, v in m.items() if isinstance(v, (int, float, list))}


def test_user_limit_rests_the_account_that_posted(env, capsys):
    fp, prompt = fingerprint(f"user-token-{uuid.uuid4()}"), uid()
    asyncio.run(DynamoPromptLedger(env).record(prompt, fp, "1300000000000000001", uid()))
    capsys.readouterr()
    t0 = time.time()
    assert handle([record(USER_LIMIT_TEXTS[1], prompt_id=prompt)]) == {"batchItemFailures": []}
    rec = asyncio.run(DynamoHealthStore(env).load(KIND_ACCOUNT))[fp]
    assert rec.health == Health.RESTING and rec.reason
    assert rec.resting_until in {next_reset(t0, TZ, RESET), next_reset(time.time(), TZ, RESET)}
    metrics = emf_metrics(capsys.readouterr().out)
    assert metrics["AccountCooldowns"] == 1 and metrics["CozeError_user_limit"] == 1


def test_bot_limit_rests_the_bot(env, capsys):
    bot, prompt = uid(), uid()
    asyncio.run(DynamoPromptLedger(env).record(prompt, fingerprint("t"), bot, uid()))
    capsys.readouterr()
    assert handle([record(BOT_LIMIT_TEXTS[0], prompt_id=prompt, author_id=bot)]) == {"batchItemFailures": []}
    rec = asyncio.run(DynamoHealthStore(env).load(KIND_BOT))[bot]
    assert rec.health == Health.RESTING
    assert rec.resting_until == pytest.approx(next_reset(time.time(), TZ, RESET), abs=86400)
    assert emf_metrics(capsys.readouterr().out)["BotCooldowns"] == 1


def test_bot_limit_without_ledger_rests_the_replying_bot(env):
    bot = uid()
    assert handle([record(BOT_LIMIT_TEXTS[0], prompt_id=uid(), author_id=bot)]) == {"batchItemFailures": []}
    assert asyncio.run(DynamoHealthStore(env).load(KIND_BOT))[bot].health == Health.RESTING


def test_user_limit_for_an_unknown_prompt_is_not_a_failure(env, capsys):
    before = asyncio.run(DynamoHealthStore(env).load(KIND_ACCOUNT))
    capsys.readouterr()
    assert handle([record(USER_LIMIT_TEXTS[1], prompt_id=uid())]) == {"batchItemFailures": []}
    assert asyncio.run(DynamoHealthStore(env).load(KIND_ACCOUNT)) == before
    assert emf_metrics(capsys.readouterr().out)["CooldownsWithoutPrompt"] == 1


def test_duplicate_delivery_leaves_one_resting_record(env, moto, tables):
    fp, prompt = fingerprint(f"user-token-{uuid.uuid4()}"), uid()
    asyncio.run(DynamoPromptLedger(env).record(prompt, fp, "1300000000000000001", uid()))
    rec = record(USER_LIMIT_TEXTS[0], prompt_id=prompt)
    assert handle([rec, copy.deepcopy(rec)]) == {"batchItemFailures": []}
    runtime.reset()  # another execution environment gets the retry
    assert handle([copy.deepcopy(rec)]) == {"batchItemFailures": []}
    items = moto.client().query(
        TableName=tables[1]["state"], KeyConditionExpression="pk = :p AND sk = :s",
        ExpressionAttributeValues={":p": {"S": f"health#{KIND_ACCOUNT}"}, ":s": {"S": fp}})["Items"]
    assert len(items) == 1 and items[0]["health"]["S"] == Health.RESTING.value


def test_a_failed_health_write_reports_the_record():
    class Broken(MemoryHealthStore):
        async def save_health(self, kind, record):
            raise ConnectionError("state table unreachable")

    async def go():
        ledger = MemoryPromptLedger()
        await ledger.record("p1", "tok:abcd1234", "b1", "c1")
        cooldowns = Cooldowns(ledger, Broken(), tz=TZ, reset_time=RESET)
        rec = record(USER_LIMIT_TEXTS[1], prompt_id="p1")

        class NoChannels:
            async def schedule_delete_if_in_use(self, channel_id, delete_at):
                return False

        return rec, await process_records([rec], NoChannels(), auto_delete_seconds=5, cooldowns=cooldowns)

    rec, result = asyncio.run(go())
    assert result.failures == [rec["dynamodb"]["SequenceNumber"]]


# -- the ledger's contract ----------------------------------------------------------------------
@pytest.fixture(params=["memory", "dynamodb"])
def ledger(request, env):
    return MemoryPromptLedger() if request.param == "memory" else DynamoPromptLedger(env)


def test_ledger_records_and_looks_up(ledger):
    prompt = uid()

    async def go():
        assert await ledger.lookup(prompt) is None
        await ledger.record(prompt, "tok:0123abcd", "1300000000000000001", "1500000000000000100")
        await ledger.record(prompt, "tok:0123abcd", "1300000000000000001", "1500000000000000100")  # again
        return await ledger.lookup(prompt)

    assert asyncio.run(go()) == {"account": "tok:0123abcd", "coze_bot_id": "1300000000000000001",
                                 "channel_id": "1500000000000000100"}


def test_memory_ledger_is_bounded():
    async def go():
        ledger = MemoryPromptLedger(max_prompts=3)
        for i in range(5):
            await ledger.record(f"p{i}", f"tok:{i}", "b", "c")
        return [await ledger.lookup(f"p{i}") for i in range(5)]

    got = asyncio.run(go())
    assert got[:2] == [None, None] and all(got[2:])


def test_dynamodb_ledger_item_has_a_ttl_and_no_token(env, moto, tables):
    prompt = uid()
    asyncio.run(DynamoPromptLedger(env).record(prompt, fingerprint("secret-token"), "b", "c"))
    item = moto.client().get_item(TableName=tables[1]["state"],
                                  Key={"pk": {"S": f"prompt#{prompt}"}, "sk": {"S": "ledger"}})["Item"]
    assert "secret-token" not in json.dumps(item)
    assert time.time() + 86400 < float(item["expires_at"]["N"]) < time.time() + 3 * 86400


def test_service_never_fails_on_a_ledger_error(caplog):
    from cdp.app.conversation import ConversationService
    from cdp.app.pool import AccountPool
    from cdp.settings import load_settings

    class Broken:
        async def record(self, *a):
            raise ConnectionError("state table unreachable")

    s = load_settings(BOT_TOKEN="b.t", USER_AUTHORIZATION="u.t", GUILD_ID="1100000000000000001",
                      COZE_BOT_ID="1300000000000000001")
    pool = AccountPool(s.user_tokens, MemoryHealthStore(), tz=s.TZ, reset_time=s.DAILY_RESET_TIME)
    svc = ConversationService(s, rest=None, replies=None, channels=None, pool=pool, ledger=Broken())
    asyncio.run(svc._record_prompt("p1", fingerprint("u.t"), "2", "3"))  # no exception
    assert "could not record who posted the prompt" in caplog.text
