"""One fault-injection run (issue 12): 200 conversations, streamed and not, across both topologies at
once, with at least 100 faults of every class (gateway, REST, store, client, process) injected while
they run. Every figure is checked from the fake Discord's records (prompts per nonce and marker, the
Coze bot's reply, channels left) and the clients' results (the exact reply, or a clear OpenAI error /
error frame + [DONE]); the table is printed.

CDP_SOAK=1 (`make soak`) runs the longer variant: 1000 conversations and faults twice as often.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter

import pytest

from tests.faults.harness import (
    Topology,
    classify,
    drive,
    plan,
    start_topology,
    table,
    wait_no_chat_channels,
)
from tests.support import tables

pytestmark = pytest.mark.e2e

SOAK = os.environ.get("CDP_SOAK", "") not in ("", "0")
PER_TOPOLOGY = 500 if SOAK else 100
CONCURRENCY = 10 if SOAK else 8
INTERVAL = 0.3 if SOAK else 0.6
# share of a topology's conversations started -> process fault
PROCESS_FAULTS = {
    "memory": {0.5: "sigterm_api"},
    "dynamodb": {0.35: "sigkill_listener", 0.7: "sigterm_api"},
}


@pytest.mark.timeout(900 if SOAK else 300)
async def test_fault_run(capsys):
    topos: list[Topology] = []
    try:
        for t in await asyncio.gather(*(asyncio.to_thread(start_topology, n) for n in ("memory", "dynamodb")),
                                      return_exceptions=True):
            if isinstance(t, BaseException):
                raise t
            topos.append(t)
        counts: Counter = Counter()
        convs = {t.name: plan(t.name, PER_TOPOLOGY) for t in topos}
        await asyncio.gather(*(drive(t, convs[t.name], counts, concurrency=CONCURRENCY, interval=INTERVAL,
                                     process_faults=PROCESS_FAULTS[t.name]) for t in topos))
        left = dict(zip([t.name for t in topos],
                        await asyncio.gather(*(wait_no_chat_channels(t.fake, 45) for t in topos)), strict=True))
        leaked = sum(map(len, left.values()))
        duplicates = []
        for t in topos:
            duplicates += await asyncio.to_thread(classify, t.fake, convs[t.name])
        every = [c for t in topos for c in convs[t.name]]
        unregistered = sum(t.unregistered_at_shutdown for t in topos)
        drains = [d for t in topos for d in t.drains]
        report = table(counts, every, duplicates, leaked, unregistered, drains)
        tables.report("Fault-injection run" + (" (soak)" if SOAK else ""), report)
        with capsys.disabled():  # the table itself is printed in the run's summary (tests/conftest.py)
            if os.environ.get("CDP_FAULT_LOGS"):
                for t in topos:
                    for p in [t.stack.api, *t.stack.extra, *t.retired]:
                        print(t.name, " ".join(p.args), p.log_path)

        problems = []
        for c in every:
            if c.outcome in ("lost", "unanswered") or c.marker in duplicates:
                problems.append(
                    f"{c.topo} #{c.index} {c.outcome} stream={c.stream} client={c.client} status={c.status} "
                    f"done={c.done} finish={c.finish} error={c.error} transport={c.transport} "
                    f"attempts={c.attempts} prompts={c.prompts}\n   got      {c.text!r}\n   expected {c.expected!r}")
        assert not problems, "\n".join(problems[:20])
        assert leaked == 0 and unregistered == 0, f"left: {left}, unregistered at SIGTERM: {unregistered}"
        assert sum(counts.values()) >= 100
        assert len(every) == 2 * PER_TOPOLOGY
        assert all(code == 0 for t in topos for code in t.exit_codes)  # each SIGTERM: drained, clean exit
        # every fault class happened at least once
        labels = {label.split(":")[0] for _, label in counts}
        assert labels == {"gateway", "rest", "store", "client", "process"}, labels
    finally:
        for t in topos:
            t.stop()
