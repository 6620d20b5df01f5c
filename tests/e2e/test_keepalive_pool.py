"""Keepalive posts with the account pool: healthy accounts only, and a refused one is marked dead."""

from __future__ import annotations

from cdp.app.jobs import keepalive
from cdp.entry.bootstrap import make_rest, make_service, make_stores
from cdp.settings import load_settings
from cdp.sim import FakeDiscord

from tests.support.fake import fast_sim_config
from tests.support.proc import settings_env


def _message_posts(fake: FakeDiscord, status: int) -> int:
    return sum(1 for r in fake.request_log() if r["method"] == "POST" and r["path"].endswith("/messages")
               and r["auth_kind"] != "bot" and r["status"] == status)


async def test_keepalive_uses_healthy_accounts_and_marks_refused_ones_dead():
    with FakeDiscord(fast_sim_config()) as fake:
        env = settings_env(fake, CHANNEL_AUTO_DEL_TIME="0.2", COZE_BOT_STAY_ACTIVE_ENABLE="1")
        settings = load_settings(**env)
        revoked = settings.user_tokens[0]
        fake.revoke_token(revoked)
        stores = make_stores(settings)
        rest = make_rest(settings)
        service = make_service(settings, stores, rest)
        try:
            results = [await keepalive(settings, stores, rest, service) for _ in range(6)]
            status = await service.status()
        finally:
            await rest.aclose()
        refused = _message_posts(fake, 401)
        assert [r["sent"] for r in results] == [1] * 6
        assert _message_posts(fake, 200) == 6
        # Least recently used: the revoked account is tried by the second run at the latest, refused
        # once, marked dead, and never tried again.
        assert refused == 1
        assert [a for a in status["accounts"]["accounts"] if a["health"] == "dead"]


async def test_keepalive_waits_for_an_account_slot_like_any_prompt():
    """Before, keepalive took an account from the pool directly: it posted from an account already
    at ACCOUNT_MAX_CONCURRENT (or within ACCOUNT_MIN_GAP of its last post)."""
    import asyncio

    with FakeDiscord(fast_sim_config()) as fake:
        env = settings_env(fake, CHANNEL_AUTO_DEL_TIME="0.2", COZE_BOT_STAY_ACTIVE_ENABLE="1",
                           ACCOUNT_MAX_CONCURRENT="1", ACCOUNT_MIN_GAP="0")
        settings = load_settings(**env)
        stores = make_stores(settings)
        rest = make_rest(settings)
        service = make_service(settings, stores, rest)
        assert service.queue is not None
        try:
            held = [service.queue.lease("sk-other", f"req_busy{i}", 30) for i in range(len(settings.user_tokens))]
            for lease in held:
                await lease.acquire()  # every account has its one prompt in flight
            job = asyncio.create_task(keepalive(settings, stores, rest, service))
            await asyncio.sleep(0.8)
            assert not job.done() and _message_posts(fake, 200) == 0
            await held[0].release()
            result = await asyncio.wait_for(job, 10)
            for lease in held[1:]:
                await lease.release()
        finally:
            await rest.aclose()
        assert result["sent"] == 1 and _message_posts(fake, 200) == 1
