"""Cleanup function (EventBridge Scheduler, every minute): deletes temporary channels whose time
has come, and in-use ones a crashed request left (ConversationService.delete_due_channels)."""

from cdp.app.jobs import cleanup
from cdp.entry.aws.runtime import job_handler

handler = job_handler(cleanup, name="cleanup")
