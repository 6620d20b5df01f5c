"""MAX_CHANNEL_DEL_TYPE when the guild is full (Discord code 30013), and `cdp cleanup` sweeping
channels a crashed process left behind, against a real `cdp serve` / `cdp cleanup` + fake Discord."""

from __future__ import annotations

import time
import uuid

import httpx
import openai
import pytest

from tests.support.proc import run_cli_json as run_cli
from tests.support.stack import API_KEY, coze_reply_text, start_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def oldest(fake):
    s = start_stack("memory", fake, MAX_CHANNEL_DEL_TYPE="OLDEST", CHANNEL_SWEEP_AGE="0")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def all_(fake):
    s = start_stack("memory", fake, MAX_CHANNEL_DEL_TYPE="all", CHANNEL_SWEEP_AGE="0")
    yield s
    s.stop()


async def create(stack, name: str) -> str:
    async with httpx.AsyncClient(base_url=stack.url, headers={"proxy-secret": API_KEY}) as http:
        r = await http.post("/api/channel/create", json={"name": name})
    assert r.json()["success"], r.text
    return r.json()["data"]["id"]


def fill_guild(fake) -> None:
    fake.set_max_channels(sum(1 for c in fake.channels() if c["type"] not in (10, 11, 12)))


def wait_gone(fake, ids: set[str], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while ids & {c["id"] for c in fake.channels()}:
        assert time.monotonic() < deadline, "channels not deleted in time"
        time.sleep(0.1)


async def chat(stack, text: str):
    async with stack.client() as client:
        return await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": text}])


async def test_oldest_deletes_the_oldest_temporary_channel_then_retries(oldest):
    fake = oldest.fake
    first, second = await create(oldest, "cdp-chat-old-1"), await create(oldest, "cdp-chat-old-2")
    notes = await create(oldest, "notes")
    fill_guild(fake)
    try:
        m = uuid.uuid4().hex
        resp = await chat(oldest, f"full guild {m}")
        assert resp.choices[0].message.content == coze_reply_text(fake, m)
        ids = {c["id"] for c in fake.channels()}
        assert first not in ids and second in ids and notes in ids and fake.config.channel_id in ids
    finally:
        fake.set_max_channels(500)
    async with httpx.AsyncClient(base_url=oldest.url, headers={"proxy-secret": API_KEY}) as http:
        assert (await http.get("/api/channel/del/all/cdp")).json()["success"]


async def test_nothing_to_free_is_a_clear_503(oldest):
    fake = oldest.fake
    wait_gone(fake, {c["id"] for c in fake.channels() if c["name"].startswith("cdp-chat-")})
    fill_guild(fake)
    try:
        with pytest.raises(openai.APIStatusError) as info:
            await chat(oldest, "no room")
    finally:
        fake.set_max_channels(500)
    err = info.value
    assert err.status_code == 503 and err.body["code"] == "channel_limit"
    assert "no cdp-chat-* channel could be deleted" in err.body["message"]
    assert err.response.headers["retry-after"] == "60"


async def test_all_deletes_every_temporary_channel_then_retries(all_):
    fake = all_.fake
    temp = {await create(all_, f"cdp-chat-all-{i}") for i in range(3)}
    fill_guild(fake)
    try:
        m = uuid.uuid4().hex
        resp = await chat(all_, f"full guild, all {m}")
        assert resp.choices[0].message.content == coze_reply_text(fake, m)
        assert not temp & {c["id"] for c in fake.channels()}
        assert fake.config.channel_id in {c["id"] for c in fake.channels()}
    finally:
        fake.set_max_channels(500)


def test_cdp_cleanup_sweeps_channels_a_crash_left(fake):
    """A process died with its channel registry (memory store): `cdp cleanup` finds the channel by
    its name and age (CHANNEL_SWEEP_AGE, default 1 hour) in the guild; younger and non-temporary
    channels stay."""
    orphan = fake.add_old_channel("cdp-chat-orphan", age=2 * 3600)["id"]
    old_notes = fake.add_old_channel("notes-from-last-year", age=365 * 86400)["id"]
    young = fake.add_old_channel("cdp-chat-young", age=1800)["id"]
    result = run_cli(fake, "cleanup")
    assert result == {"exit": 0, "deleted": 0, "swept": 1, "files_pruned": 0}
    ids = {c["id"] for c in fake.channels()}
    assert orphan not in ids and old_notes in ids and young in ids
    assert orphan in {c["id"] for c in fake.deleted_channels()}
    assert run_cli(fake, "cleanup", "--no-sweep") == {"exit": 0, "deleted": 0, "files_pruned": 0}
    assert run_cli(fake, "cleanup", CHANNEL_SWEEP_AGE="600") == \
        {"exit": 0, "deleted": 0, "swept": 1, "files_pruned": 0}
    assert young not in {c["id"] for c in fake.channels()}


def test_cdp_cleanup_prunes_old_rehosted_images(fake, tmp_path):
    """Re-hosted images in FILES_DIR older than FILES_RETENTION_DAYS go; newer ones and other files stay."""
    import os
    import time

    old, new, other = tmp_path / ("a" * 32 + ".png"), tmp_path / ("b" * 32 + ".png"), tmp_path / "keep.txt"
    for path in (old, new, other):
        path.write_bytes(b"x")
    long_ago = time.time() - 40 * 86400
    os.utime(old, (long_ago, long_ago))
    os.utime(other, (long_ago, long_ago))
    result = run_cli(fake, "cleanup", "--no-sweep", FILES_DIR=str(tmp_path), FILES_RETENTION_DAYS="30")
    assert result["files_pruned"] == 1
    assert not old.exists() and new.exists() and other.exists()
