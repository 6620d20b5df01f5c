"""Many bots (bot_config.json) and many accounts (USER_AUTHORIZATION pool with health), end to end:
openai SDK → `cdp serve` → FakeDiscord with three simulated Coze bots and three user accounts."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import tempfile
import uuid
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import openai
import pytest
from cdp.sim import FakeDiscord
from cdp.sim.config import make_token

from tests.support.fake import fast_sim_config
from tests.support.proc import CdpProcess, free_port, settings_env
from tests.support.stack import MODES, start_stack
from tests.support.telegram import FakeTelegram

BOT_A, BOT_B, BOT_C = "1300000000000000001", "1300000000000000002", "1300000000000000003"
USERS = {make_token(f"140000000000000000{i}", f"sim-user-token-{n}-0000000000000000"): f"140000000000000000{i}"
         for i, n in ((1, "alice"), (2, "bob"), (3, "carol"))}
KEY1, KEY2 = "sk-test-key-1", "sk-test-key-2"
BOT_CONFIG = [
    {"proxySecret": KEY1, "cozeBotId": BOT_A, "model": ["model-a", "shared"]},
    {"proxySecret": KEY1, "cozeBotId": BOT_B, "model": ["shared"]},
    {"proxySecret": KEY2, "cozeBotId": BOT_C, "model": ["model-c", "tiny"], "messageMaxToken": "40"},
]


def marker() -> str:
    return "m" + uuid.uuid4().hex[:12]


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def sim_fp(token: str) -> str:
    return "REDACTED:" + hashlib.sha256(token.encode()).hexdigest()[:12]


def posts(fake: FakeDiscord, m: str) -> list[dict]:
    """POSTs of a prompt containing marker `m` (every attempt, also refused ones), in order."""
    return [r for r in fake.request_log() if r["method"] == "POST" and r["path"].endswith("/messages")
            and m in json.dumps(r.get("json") or {})]


def poster(fake: FakeDiscord, m: str) -> str:
    """The user token whose post of `m` Discord accepted."""
    by_fp = {sim_fp(t): t for t in USERS}
    ok = [r for r in posts(fake, m) if r["status"] == 200]
    assert ok, f"no accepted post for {m}"
    return by_fp[ok[-1]["headers"]["authorization"]]


def bot_of(fake: FakeDiscord, m: str) -> str:
    content = (posts(fake, m)[-1].get("json") or {}).get("content", "")
    return next(b for b in (BOT_A, BOT_B, BOT_C) if f"<@{b}>" in content)


def config_file(entries) -> str:
    path = Path(tempfile.mkdtemp(prefix="cdp-botcfg-")) / "bot_config.json"
    path.write_text(json.dumps(entries) if not isinstance(entries, str) else entries, encoding="utf-8")
    return str(path)


def sim_config():
    return fast_sim_config(coze_bot_ids=[BOT_A, BOT_B, BOT_C], coze_bot_tokens={}, user_tokens=dict(USERS))


@pytest.fixture(scope="module")
def fake():
    with FakeDiscord(sim_config()) as fd:
        yield fd


@pytest.fixture(scope="module", params=MODES)
def routed(request, fake):
    """A stack routing by bot_config.json (read-only use: no test changes its health state)."""
    s = start_stack(request.param, fake, BOT_CONFIG_PATH=config_file(BOT_CONFIG))
    yield s
    s.stop()


def client(stack, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=stack.url + "/v1", api_key=key, max_retries=0)


# -- many bots ---------------------------------------------------------------------------------------
async def test_models_lists_exactly_what_the_key_may_use(routed):
    async with client(routed, KEY1) as c1, client(routed, KEY2) as c2:
        assert [m.id for m in (await c1.models.list()).data] == ["model-a", "shared"]
        listed = (await c2.models.list()).data
        assert [m.id for m in listed] == ["model-c", "tiny"]
        assert all(m.object == "model" and m.created > 0 and m.owned_by for m in listed)
        assert (await c2.models.retrieve("model-c")).id == "model-c"
        with pytest.raises(openai.NotFoundError) as info:
            await c1.models.retrieve("model-c")
        assert info.value.code == "model_not_found"


async def test_unknown_model_or_other_keys_model_is_404_and_posts_nothing(routed):
    m = marker()
    async with client(routed, KEY1) as c1:
        for model in ("model-c", "gpt-4o"):
            with pytest.raises(openai.NotFoundError) as info:
                await c1.chat.completions.create(model=model, messages=user(f"hi {m}"))
            assert info.value.code == "model_not_found" and info.value.param == "model"
    assert posts(routed.fake, m) == []


async def test_routes_by_key_and_model_and_every_bot_is_heard(routed):
    async with client(routed, KEY1) as c1, client(routed, KEY2) as c2:
        ma, mc = marker(), marker()
        ra = await c1.chat.completions.create(model="model-a", messages=user(f"to a {ma}"))
        rc = await c2.chat.completions.create(model="model-c", messages=user(f"to c {mc}"))
    assert ma in ra.choices[0].message.content and mc in rc.choices[0].message.content
    # BOT_C is not COZE_BOT_ID: its reply was still recognised by the listener
    assert bot_of(routed.fake, ma) == BOT_A and bot_of(routed.fake, mc) == BOT_C


async def test_random_pick_among_matching_bots(routed):
    marks = [marker() for _ in range(14)]
    async with client(routed, KEY1) as c1:
        answers = await asyncio.gather(*[c1.chat.completions.create(model="shared", messages=user(f"s {m}"))
                                         for m in marks])
    assert all(m in a.choices[0].message.content for m, a in zip(marks, answers, strict=True))
    assert {bot_of(routed.fake, m) for m in marks} == {BOT_A, BOT_B}


async def test_per_bot_message_max_token(routed):
    m = marker()
    async with client(routed, KEY2) as c2:
        with pytest.raises(openai.BadRequestError) as info:
            await c2.chat.completions.create(model="tiny", messages=user(f"{m} " + "word " * 60))
        assert info.value.code == "context_length_exceeded" and "40" in info.value.message
        ok = await c2.chat.completions.create(model="tiny", messages=user(f"short {m}"))
    assert m in ok.choices[0].message.content


def test_serve_refuses_a_bad_bot_config_naming_entry_and_field(fake):
    bad = [BOT_CONFIG[0], {"proxySecret": KEY1, "cozeBotId": "not-an-id", "model": []}]
    proc = CdpProcess(["serve"], settings_env(fake, PORT=str(free_port()), HOST="127.0.0.1",
                                              BOT_CONFIG_PATH=config_file(bad))).start()
    try:
        assert proc.wait_exit(30) == 2
    finally:
        proc.stop()
    log = proc.log()
    assert "entry 1, field cozeBotId" in log and "entry 1, field model" in log and "entry 0" not in log
    missing = CdpProcess(["serve"], settings_env(fake, PORT=str(free_port()), HOST="127.0.0.1",
                                                 BOT_CONFIG_PATH="/nonexistent/bot_config.json")).start()
    try:
        assert missing.wait_exit(30) == 2
    finally:
        missing.stop()
    assert "file not found" in missing.log()


# -- many accounts -----------------------------------------------------------------------------------
@pytest.fixture(params=MODES)
def own(request):
    """A FakeDiscord + stack + fake Telegram of its own: these tests change account/bot health."""
    with FakeDiscord(sim_config()) as fd, FakeTelegram() as tg:
        s = start_stack(request.param, fd, USER_AUTHORIZATION=",".join(USERS),
                        BOT_CONFIG_PATH=config_file(BOT_CONFIG), TZ="Asia/Shanghai",
                        NOTIFY_TELEGRAM_BOT_TOKEN="123456:tg-secret-token-abcdef",
                        NOTIFY_TELEGRAM_USER_ID="424242", TELEGRAM_API_BASE=tg.url)
        s.telegram = tg
        try:
            yield s
        finally:
            s.stop()
            assert "tg-secret-token" not in s.logs()
            for token in USERS:
                assert token not in s.logs()


async def status(stack) -> dict:
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.get(stack.url + "/api/status", headers={"Authorization": f"Bearer {KEY1}",
                                                               "proxy-secret": KEY1})
    assert r.status_code == 200, r.text
    return r.json()


async def ask(c, model="model-a", extra="") -> str:
    m = marker()
    r = await c.chat.completions.create(model=model, messages=user(f"q {m} {extra}"))
    assert m in r.choices[0].message.content
    return m


async def test_dead_accounts_fail_over_then_503_and_alerts(own):
    fake = own.fake
    alice, bob, carol = list(USERS)
    async with client(own, KEY1) as c1:
        first = [await ask(c1) for _ in range(3)]
        # least recently used: three requests, three different accounts
        assert {poster(fake, m) for m in first} == set(USERS)
        fake.revoke_token(alice)  # 401 from now on
        fake.mark_unverified(bob)  # "You need to verify your account" from now on
        later = [await ask(c1) for _ in range(4)]
        assert {poster(fake, m) for m in later} == {carol}  # failed over within the same requests
        refused = [(r["headers"]["authorization"], r["status"]) for r in fake.request_log()
                   if r["method"] == "POST" and r["path"].endswith("/messages") and r["status"] != 200]
        assert sorted(refused) == sorted([(sim_fp(alice), 401), (sim_fp(bob), 403)])  # once each, never again
        st = await status(own)
        health = {a["account"]: a["health"] for a in st["accounts"]}
        assert sorted(health.values()) == ["dead", "dead", "healthy"]
        assert all(a["dead_since"] for a in st["accounts"] if a["health"] == "dead")
        own.telegram.wait_for("is dead")
        fake.revoke_token(carol)
        m = marker()
        with pytest.raises(openai.InternalServerError) as info:
            await c1.chat.completions.create(model="model-a", messages=user(f"none {m}"))
    err = info.value
    assert err.status_code == 503 and err.code == "no_available_account"
    assert int(err.response.headers["Retry-After"]) > 0 and "USER_AUTHORIZATION" in err.message
    own.telegram.wait_for("No usable Discord user token")
    assert all(t["chat_id"] in ("424242", 424242) for t in own.telegram.messages)


async def test_coze_limits_rest_the_account_and_the_bot(own):
    """One stack for both (a stack start is the slow part)."""
    await user_limit_rests_the_account_until_the_daily_reset(own)
    await bot_limit_rests_the_bot_then_503_with_retry_after(own)


async def user_limit_rests_the_account_until_the_daily_reset(own):
    fake = own.fake
    async with client(own, KEY1) as c1:
        with pytest.raises(openai.APIStatusError) as info:
            await ask(c1, extra="[[sim:error=user_limit]]")
        assert info.value.code == "coze_account_limited"
        st = await status(own)
        resting = [a for a in st["accounts"] if a["health"] == "resting"]
        assert len(resting) == 1
        until = dt.datetime.fromisoformat(resting[0]["resting_until"])
        assert until.astimezone(ZoneInfo("Asia/Shanghai")).time() == dt.time(0, 0)  # DAILY_RESET_TIME in TZ
        assert dt.timedelta(0) < until - dt.datetime.now(dt.UTC) <= dt.timedelta(days=1)
        rest_fp = resting[0]["account"]
        used = {poster(fake, await ask(c1)) for _ in range(4)}
    from cdp.domain.secrets import fingerprint
    assert len(used) == 2 and rest_fp not in {fingerprint(t) for t in used}


async def bot_limit_rests_the_bot_then_503_with_retry_after(own):
    fake = own.fake
    async with client(own, KEY1) as c1, client(own, KEY2) as c2:
        m = marker()
        with pytest.raises(openai.APIStatusError):
            await c2.chat.completions.create(model="model-c", messages=user(f"{m} [[sim:error=bot_limit]]"))
        # BOT_C rests: model-c has no other bot → refused before anything is posted
        m2 = marker()
        with pytest.raises(openai.InternalServerError) as info:
            await c2.chat.completions.create(model="model-c", messages=user(f"again {m2}"))
        assert info.value.code == "coze_bot_limited" and posts(fake, m2) == []
        wait = int(info.value.response.headers["Retry-After"])
        assert 0 < wait <= 24 * 3600
        # other bots are unaffected
        assert bot_of(fake, await ask(c1, model="model-a")) == BOT_A
    st = await status(own)
    assert {b["coze_bot_id"]: b["health"] for b in st["bots"]}[BOT_C] == "resting"
