"""The ECS listener's metrics (`cdp listener --metrics-interval`, on by itself on ECS): CloudWatch EMF
lines in its log with the gateway's state, its store health and the reply writes it made, under the
same names as `cdp serve`'s /metrics. Checked from the lines a real listener process wrote during a
chat through the distributed stack (moto)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.support.stack import start_stack

pytestmark = pytest.mark.e2e


def emf_values(log: str) -> list[tuple[str, dict[str, str], float]]:
    """(metric, dimensions, value) of every EMF object in `log`."""
    out = []
    for line in log.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if not isinstance(obj, dict) or "_aws" not in obj:
            continue
        directive = obj["_aws"]["CloudWatchMetrics"][0]
        dims = {d: obj[d] for group in directive["Dimensions"] for d in group if d != "service"}
        for metric in directive["Metrics"]:
            values = obj[metric["Name"]]
            for v in values if isinstance(values, list) else [values]:
                out.append((metric["Name"], dims, float(v)))
    return out


async def test_listener_writes_its_metrics_as_emf(fake):
    stack = start_stack("dynamodb", fake, listener_args=("--metrics-interval", "0.5"))
    try:
        async with stack.client() as client:
            reply = await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content
        listener = stack.extra[0]
        deadline = time.monotonic() + 10
        while True:  # the next interval's line carries the chat's writes
            values = emf_values(listener.log())
            written = sum(v for n, d, v in values
                          if n == "cdp_listener_store_writes_total" and d == {"outcome": "written"})
            if written >= 1 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert written >= 1, values[-10:]
        ready = [v for n, d, v in values if n == "cdp_gateway_state" and d == {"state": "ready"}]
        assert ready and ready[-1] == 1.0
        assert [v for n, _, v in values if n == "cdp_listener_store_healthy"][-1] == 1.0
        namespaces = {json.loads(line)["_aws"]["CloudWatchMetrics"][0]["Namespace"]
                      for line in listener.log().splitlines() if line.startswith('{"_aws"')}
        assert namespaces == {"CozeDiscordProxy"}
    finally:
        stack.stop()
