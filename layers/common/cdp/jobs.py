"""Scheduled jobs, called by the Lambdas (functions/cleanup, functions/keepalive) and usable by
`cdp serve`'s own scheduler. Each takes the objects built by cdp.bootstrap and returns a summary.
"""

from __future__ import annotations

import logging
import random
import uuid

log = logging.getLogger("cdp.jobs")

KEEPALIVE_TEXT = "keepalive"


async def cleanup(settings, stores, rest, service) -> dict:
    """Delete every registered temporary channel whose time has come (also ones a crash left)."""
    deleted = await service.delete_due_channels()
    return {"deleted": deleted}


async def keepalive(settings, stores, rest, service) -> dict:
    """Post one message mentioning each configured Coze bot in CHANNEL_ID, as a Discord user
    (COZE_BOT_STAY_ACTIVE_ENABLE; the original did this daily at 09:10 TZ)."""
    from cdp.discord.errors import DiscordError, fingerprint

    if not settings.COZE_BOT_STAY_ACTIVE_ENABLE:
        return {"sent": 0, "skipped": "COZE_BOT_STAY_ACTIVE_ENABLE=0"}
    if not settings.CHANNEL_ID:
        log.warning("keepalive skipped: CHANNEL_ID is not set")
        return {"sent": 0, "skipped": "CHANNEL_ID not set"}
    tokens = list(settings.user_tokens)
    if not tokens:
        return {"sent": 0, "skipped": "no USER_AUTHORIZATION"}
    sent, failed = 0, []
    for bot_id in settings.coze_bot_ids:
        random.shuffle(tokens)
        for token in tokens:  # another account if one is refused
            try:
                await rest.send_user_message(token, settings.CHANNEL_ID, f"<@{bot_id}> {KEEPALIVE_TEXT}",
                                             nonce=str(uuid.uuid4().int % 10**18), allowed_user_ids=[bot_id])
                sent += 1
                break
            except DiscordError as exc:
                log.warning("keepalive message refused", extra={"account": fingerprint(token),
                                                                "coze_bot_id": bot_id, "status": exc.status})
        else:
            failed.append(bot_id)
    return {"sent": sent, "failed": failed}
