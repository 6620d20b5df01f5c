"""Keepalive function (EventBridge Scheduler, daily 09:10 in the TimeZone parameter): one message
to each configured Coze bot in CHANNEL_ID, posted as a Discord user (COZE_BOT_STAY_ACTIVE_ENABLE)."""

from cdp.app.jobs import keepalive
from cdp.entry.aws.runtime import job_handler

handler = job_handler(keepalive, name="keepalive")
