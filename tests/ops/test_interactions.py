"""Discord interactions: Ed25519 keys made here, requests signed like Discord's, sent over HTTP to
`cdp serve` at /interactions and through the Lambda handler (API Gateway events)."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from cdp.entry import interactions
from cdp.entry.aws import runtime as aws_runtime
from cdp.sim import FakeDiscord

from tests.ops.conftest import Signer
from tests.support.aws import LambdaContext, load_event, load_handler_module
from tests.support.fake import fast_sim_config
from tests.support.proc import settings_env
from tests.support.stack import start_stack

PING = {"type": 1, "id": "1300000000000000099", "application_id": "1200000000000000001", "token": "t", "version": 1}


# -- the signature check itself ----------------------------------------------------------------------
def test_verify_request(signer):
    body, headers = signer.signed(PING)
    sig, ts = headers["X-Signature-Ed25519"], headers["X-Signature-Timestamp"]
    interactions.verify_request(signer.public_key, sig, ts, body)  # no exception
    cases = {
        "tampered body": (signer.public_key, sig, ts, body.replace(b'"type": 1', b'"type": 2')),
        "wrong key": (Signer().public_key, sig, ts, body),
        "other timestamp": (signer.public_key, sig, str(int(ts) + 1), body),
        "missing signature": (signer.public_key, None, ts, body),
        "garbage signature": (signer.public_key, "zz" * 64, ts, body),
    }
    for name, args in cases.items():
        with pytest.raises(interactions.Rejected) as exc:
            interactions.verify_request(*args)
        assert exc.value.status == 401, name
    old = int(time.time()) - 301
    body, headers = signer.signed(PING, old)
    with pytest.raises(interactions.Rejected, match="stale"):
        interactions.verify_request(signer.public_key, headers["X-Signature-Ed25519"], str(old), body)
    with pytest.raises(interactions.Rejected) as exc:
        interactions.verify_request("", sig, ts, body)
    assert exc.value.status == 503


def test_command_definitions_and_refusals():
    (cmd,) = interactions.COMMANDS
    assert cmd["name"] == "cdp" and [o["name"] for o in cmd["options"]] == ["status", "cleanup", "keepalive"]
    base = {"guild_id": "1", "member": {"permissions": str(1 << 5)}}
    assert interactions.refusal(base, "1") is None
    assert interactions.refusal({**base, "guild_id": "2"}, "1")
    assert interactions.refusal({**base, "member": {"permissions": str(1 << 11)}}, "1")
    assert interactions.refusal({"user": {"id": "5"}}, "1")  # a DM
    job = interactions.Job("cleanup", "1", "secret-token")
    assert "secret-token" not in repr(job) and interactions.Job.from_event(job.to_event()) == job


# -- over HTTP against `cdp serve` -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def fake(signer):
    with FakeDiscord(fast_sim_config(app_public_key=signer.public_key)) as fd:
        yield fd


@pytest.fixture(scope="module")
def stack(fake, signer):
    s = start_stack("memory", fake, DISCORD_PUBLIC_KEY=signer.public_key)
    yield s
    s.stop()
    logs = s.logs()
    for secret in [fake.config.bot_token, *fake.config.user_tokens]:
        assert secret not in logs
    assert "aW50ZXJhY3Rpb246" not in logs, "an interaction token reached the log"


def post(stack, body: bytes, headers: dict) -> httpx.Response:
    return httpx.post(stack.url + "/interactions", content=body, headers=headers, timeout=10)


def wait_for_edit(fake, token: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        edits = [e for e in fake.interaction_responses() if e["token"] == token]
        if edits:
            return edits[-1]["body"]
        time.sleep(0.05)
    raise AssertionError("the deferred response was never edited")


def test_ping_pong_and_bad_signatures_over_http(stack, signer):
    body, headers = signer.signed(PING)
    r = post(stack, body, headers)
    assert r.status_code == 200 and r.json() == {"type": 1}
    assert post(stack, body, {"Content-Type": "application/json"}).status_code == 401
    assert post(stack, body + b" ", headers).status_code == 401  # tampered
    tampered = body.replace(b'"type": 1', b'"type": 2')
    assert post(stack, tampered, headers).status_code == 401
    assert post(stack, body, Signer().headers(body)).status_code == 401  # another application's key
    old_body, old_headers = signer.signed(PING, int(time.time()) - 600)
    r = post(stack, old_body, old_headers)
    assert r.status_code == 401 and "stale" in r.json()["error"]


def test_status_command_is_ephemeral(stack, fake, signer):
    interaction = fake.issue_interaction("cdp", "status")
    r = post(stack, *signer.signed(interaction))
    assert r.status_code == 200
    out = r.json()
    assert out["type"] == 4 and out["data"]["flags"] == 64
    content = out["data"]["content"]
    assert "Gateway: **ready**" in content and "Temporary channels alive" in content
    for token in fake.config.user_tokens:
        assert token not in content


def test_cleanup_is_deferred_then_edited(stack, fake, signer):
    interaction = fake.issue_interaction("cdp", "cleanup")
    r = post(stack, *signer.signed(interaction))
    assert r.status_code == 200 and r.json() == {"type": 5, "data": {"flags": 64}}
    edited = wait_for_edit(fake, interaction["token"])
    assert edited["content"].startswith("🧹 Cleanup done")
    log = [e for e in fake.request_log() if e["method"] == "PATCH" and "/webhooks/" in e["path"]]
    assert log and log[-1]["path"].endswith("/messages/@original") and log[-1]["status"] == 200


def test_keepalive_is_deferred_then_edited(stack, fake, signer):
    interaction = fake.issue_interaction("cdp", "keepalive")
    r = post(stack, *signer.signed(interaction))
    assert r.json()["type"] == 5
    assert wait_for_edit(fake, interaction["token"])["content"] == "📨 Keepalive sent to 1 Coze bot(s)."
    sent = [m for m in fake.messages(fake.config.channel_id) if "keepalive" in m["content"]
            and not m["author"].get("bot")]
    assert sent and f"<@{fake.config.coze_bot_ids[0]}>" in sent[-1]["content"]


def test_only_managers_of_this_guild(stack, fake, signer):
    bob = fake.issue_interaction("cdp", "cleanup", user_id="1400000000000000002")  # no Manage Server
    r = post(stack, *signer.signed(bob))
    assert r.json()["type"] == 4 and "Manage Server" in r.json()["data"]["content"]
    elsewhere = fake.issue_interaction("cdp", "status", guild_id="1100000000000000999")
    assert "another server" in post(stack, *signer.signed(elsewhere)).json()["data"]["content"]


# -- the Lambda handler, invoked with API Gateway events -------------------------------------------------
@pytest.fixture
def lambda_fn(fake, signer, monkeypatch):
    for k, v in settings_env(fake, DISCORD_PUBLIC_KEY=signer.public_key, LOG_LEVEL="INFO").items():
        monkeypatch.setenv(k, v)
    for k in ("CDP_STORE", "CDP_SECRET_ID"):
        monkeypatch.delenv(k, raising=False)
    aws_runtime.reset()
    module = load_handler_module("interactions")
    yield module
    aws_runtime.reset()


def apigw_event(body: bytes, headers: dict) -> dict:
    event = load_event("interaction_ping.json")
    kept = {k: v for k, v in event["headers"].items() if not k.lower().startswith("x-signature")}
    event["headers"] = {**kept, **headers}
    event["multiValueHeaders"] = {k: [v] for k, v in event["headers"].items()}
    event["body"] = body.decode()
    return event


def test_lambda_ping_and_refusals(lambda_fn, signer):
    body, headers = signer.signed(PING)
    resp = lambda_fn.handler(apigw_event(body, headers), LambdaContext())
    assert resp["statusCode"] == 200 and json.loads(resp["body"]) == {"type": 1}
    # lower-case header names (HTTP API payloads) and a base64 body work too
    import base64

    event = apigw_event(body, {k.lower(): v for k, v in headers.items()})
    event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
    assert lambda_fn.handler(event, LambdaContext())["statusCode"] == 200
    assert lambda_fn.handler(apigw_event(body + b"x", headers), LambdaContext())["statusCode"] == 401
    old_body, old_headers = signer.signed(PING, int(time.time()) - 400)
    assert lambda_fn.handler(apigw_event(old_body, old_headers), LambdaContext())["statusCode"] == 401
    # the sample event (a made-up signature) is refused
    assert lambda_fn.handler(load_event("interaction_ping.json"), LambdaContext())["statusCode"] == 401


def test_lambda_command_invokes_itself_then_edits(lambda_fn, fake, signer, monkeypatch):
    dispatched = []
    monkeypatch.setattr(lambda_fn, "dispatch", lambda job, ctx: dispatched.append(job.to_event()))
    interaction = fake.issue_interaction("cdp", "cleanup")
    resp = lambda_fn.handler(apigw_event(*signer.signed(interaction)), LambdaContext())
    assert json.loads(resp["body"]) == {"type": 5, "data": {"flags": 64}}
    (event,) = dispatched
    # what Lambda delivers to the asynchronous invocation
    text = lambda_fn.handler(json.loads(json.dumps(event)), LambdaContext())
    assert text.startswith("🧹 Cleanup done")
    assert wait_for_edit(fake, interaction["token"])["content"] == text
    status = fake.issue_interaction("cdp", "status")
    lambda_fn.handler(apigw_event(*signer.signed(status)), LambdaContext())
    assert "Gateway: **external**" in lambda_fn.handler(dispatched[-1], LambdaContext())


def test_lambda_dispatch_failure_answers(lambda_fn, fake, signer, monkeypatch):
    def boom(job, ctx):
        raise RuntimeError("no lambda:InvokeFunction permission")

    monkeypatch.setattr(lambda_fn, "dispatch", boom)
    interaction = fake.issue_interaction("cdp", "keepalive")
    out = json.loads(lambda_fn.handler(apigw_event(*signer.signed(interaction)), LambdaContext())["body"])
    assert out["type"] == 4 and "Could not start" in out["data"]["content"]


def test_register_commands_cli(fake):
    import os
    import subprocess
    import sys
    import tempfile

    env = {**{k: v for k, v in os.environ.items() if k in ("PATH", "HOME")}, **settings_env(fake)}
    for extra, scope in (([], fake.config.guild_id), (["--global"], "global")):
        r = subprocess.run([sys.executable, "-m", "cdp.entry.cli", "register-commands", *extra], env=env,
                           cwd=tempfile.mkdtemp(), capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode == 0, r.stderr
        (cmd,) = fake.commands(scope)
        assert cmd["name"] == "cdp" and {o["name"] for o in cmd["options"]} == {"status", "cleanup", "keepalive"}
        assert cmd["default_member_permissions"] == str(1 << 5)


def test_bench_interactions_cold_import():
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[2] / "bench" / "interactions_import.py"
    r = subprocess.run([sys.executable, str(bench), "--runs", "1", "--limit", "2000"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "heavy modules imported: none" in r.stdout
