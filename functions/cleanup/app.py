"""Cleanup function (EventBridge Scheduler, every minute): deletes temporary channels whose time
has come, in-use ones a crashed request left and stray ones (cdp.app.channels.ChannelKeeper)."""

from cdp.app.jobs import cleanup
from cdp.entry.aws.runtime import job_handler

handler = job_handler(cleanup, name="cleanup")
