"""Cleanup function (EventBridge Scheduler, every minute): deletes temporary channels whose time
has come, in-use ones a crashed request left and stray ones (cdp.app.channels.ChannelKeeper); then writes the
status gauges (accounts by state, bots resting, channels) as EMF."""

from cdp.entry.aws.gauges import cleanup_and_gauges
from cdp.entry.aws.runtime import job_handler

handler = job_handler(cleanup_and_gauges, name="cleanup")  # + the status gauges (EMF), every minute
