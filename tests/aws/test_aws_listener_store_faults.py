"""The listener's DynamoDB writes when DynamoDB fails (issue 12), over the wire: moto behind a
fault-injecting proxy (tests/support/ddb_faults.py), the fake Discord, `cdp listener` as a process.
Edits that arrive while writes fail are retried, never dropped; /healthz says 503 while writes keep
failing and 200 again once they succeed; a failed pointer write is retried too."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from cdp.adapters.discord.recorder import ReplyRecorder
from cdp.adapters.store.dynamodb import DynamoReplyStore
from cdp.settings import Settings

from tests.aws.test_aws_listener_main import coze_done, listener_env
from tests.integration.test_listener_recorder import COZE, GUILD, PROMPT, REPLY, create
from tests.support.aws import free_port, wait_until
from tests.support.aws import healthz as health
from tests.support.ddb_faults import DynamoFaultProxy


def settings(url: str, prefix: str) -> Settings:
    return Settings(CDP_TABLE_PREFIX=prefix, AWS_ENDPOINT_URL=url, AWS_REGION="us-east-1",
                    AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", _env_file=None)


def test_edits_during_a_dynamodb_outage_are_written_when_it_ends(fake, moto, tables, tmp_path):
    prefix, _ = tables
    store = DynamoReplyStore(settings(moto.url, prefix))  # reads moto directly, no faults
    channel = fake.config.channel_id
    coze = fake.config.coze_bot_ids[0]
    log_path = tmp_path / "listener.log"
    with DynamoFaultProxy(moto.url) as proxy, open(log_path, "wb") as log:
        port = free_port()
        env = listener_env(fake, moto, prefix, AWS_ENDPOINT_URL=proxy.url)
        proc = subprocess.Popen([sys.executable, "-m", "cdp.entry.cli", "listener", "--health-port", str(port)],
                                env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: health(port)[0] == 200, timeout=30)
            proxy.fail_writes_to("-replies", 500)  # every write to the replies table: 500

            prompt = fake.post_as_user(channel, f"<@{coze}> [[sim:edits=8]] tell me a story")
            wait_until(lambda: coze_done(fake, channel), timeout=15)  # every edit sent meanwhile
            code, body = wait_until(lambda: (r := health(port))[0] == 503 and r, timeout=90)
            assert body["gateway"]["state"] == "ready"  # connected, but its writes fail
            assert body["gateway"]["store"]["healthy"] is False
            assert body["gateway"]["store"]["consecutive_failures"] >= 5
            assert not asyncio.run(store.snapshot(prompt["id"])).messages  # nothing written yet
            assert proxy.counts["failed PutItem"] >= 5

            proxy.heal()
            wait_until(lambda: health(port)[0] == 200, timeout=30)
            final = [m for m in fake.messages(channel) if m["author"]["id"] == coze
                     and (m.get("message_reference") or {}).get("message_id") == prompt["id"]]

            def complete():
                snap = asyncio.run(store.snapshot(prompt["id"]))
                return snap if snap.messages and snap.messages[-1].has_components else None

            snap = wait_until(complete, timeout=30)
            assert [m.content for m in snap.messages] == [m["content"] for m in final]  # the last edit
            assert health(port)[1]["gateway"]["store"] == {"healthy": True, "consecutive_failures": 0,
                                                            "last_error": ""}
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(15)
    out = log_path.read_text(errors="replace")
    assert "could not record" not in out
    assert "store write failed; retrying" in out


class PointerFails:
    """A DynamoDB client whose pointer PutItem (pk "reply#...") raises `n` times (as botocore does
    once its own retries are spent); every other call goes to the real client."""

    def __init__(self, client, n: int) -> None:
        self._client = client
        self.left = n

    def put_item(self, **kwargs):
        from botocore.exceptions import ClientError

        if kwargs["Item"]["pk"]["S"].startswith("reply#") and self.left > 0:
            self.left -= 1
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "injected"}}, "PutItem")
        return self._client.put_item(**kwargs)

    def __getattr__(self, name):
        return getattr(self._client, name)


async def test_a_failed_pointer_write_is_retried(moto, tables):
    prefix, _ = tables
    cfg = settings(moto.url, prefix)
    client = PointerFails(DynamoReplyStore(cfg).client, 2)
    rec = ReplyRecorder(DynamoReplyStore(cfg, client=client), {COZE}, GUILD, retry_base=0.001, retry_cap=0.01)
    await rec.on_message_create(create("Hello", id=REPLY + "7", message_reference={
        "message_id": PROMPT + "7", "channel_id": "1100000000000000002"}))
    assert client.left == 0 and rec.write_failures == 2
    # another process (a fresh store: nothing cached) finds the prompt of the reply
    assert await DynamoReplyStore(cfg).prompt_for_reply(REPLY + "7") == PROMPT + "7"


class PartFails(PointerFails):
    """The reply item's PutItem raises `n` times; pointer writes succeed (and are counted)."""

    pointers = 0

    def put_item(self, **kwargs):
        from botocore.exceptions import ClientError

        if kwargs["Item"]["pk"]["S"].startswith("reply#"):
            self.pointers += 1
        elif self.left > 0:
            self.left -= 1
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "injected"}}, "PutItem")
        return self._client.put_item(**kwargs)


async def test_a_pointer_written_with_a_failed_part_is_not_written_again(moto, tables):
    prefix, _ = tables
    cfg = settings(moto.url, prefix)
    client = PartFails(DynamoReplyStore(cfg).client, 2)
    store = DynamoReplyStore(cfg, client=client)
    rec = ReplyRecorder(store, {COZE}, GUILD, retry_base=0.001, retry_cap=0.01)
    await rec.on_message_create(create("Hello", id=REPLY + "8", message_reference={
        "message_id": PROMPT + "8", "channel_id": "1100000000000000002"}))
    assert client.left == 0 and rec.write_failures == 2
    assert client.pointers == 1  # cached once DynamoDB took it: the retries wrote only the reply item
    assert [m.content for m in (await DynamoReplyStore(cfg).snapshot(PROMPT + "8")).messages] == ["Hello"]
