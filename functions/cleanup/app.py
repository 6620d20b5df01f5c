"""Cleanup function (EventBridge Scheduler, every minute): deletes temporary channels whose time
has come, and in-use ones a crashed request left (ConversationService.delete_due_channels)."""

from cdp.aws.runtime import job_handler
from cdp.jobs import cleanup

handler = job_handler(cleanup, name="cleanup")
