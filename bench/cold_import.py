"""Cold import time of each Lambda handler module (functions/<name>/app.py), in fresh processes.

    python bench/cold_import.py [--runs 5] [function ...]

Each run is a new interpreter importing the module as Lambda's bootstrap would (functions/<name>/
and the layer on sys.path, the environment of template.yaml, no network). Columns:
  import   median wall time of importing the handler module (interpreter start-up excluded)
  +build   import plus building what the first invocation builds (settings, stores, REST client,
           service, FastAPI app), still without network (no secret id, so no Secrets Manager call)
  top      the biggest top-level imports of one run (`python -X importtime`, cumulative ms)
Targets (issue 4): api < 300 ms; cleanup, keepalive < 150 ms (import).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS_MS = {"api": 300, "stream": 300, "cleanup": 150, "keepalive": 150, "replies_stream": 150}
ENV = {"CDP_STORE": "dynamodb", "CDP_REPLIES_TABLE": "bench-replies", "CDP_STATE_TABLE": "bench-state",
       "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
       "GUILD_ID": "1100000000000000001", "COZE_BOT_ID": "1300000000000000001",
       "BOT_TOKEN": "bench.bot.token", "USER_AUTHORIZATION": "bench.user.token", "PROXY_SECRET": "sk-bench",
       "POWERTOOLS_SERVICE_NAME": "coze-discord-proxy", "POWERTOOLS_METRICS_NAMESPACE": "CozeDiscordProxy"}

PROBE = """
import importlib.util, json, sys, time
t0 = time.perf_counter()
sys.path[:0] = [{fn!r}, {layer!r}]
spec = importlib.util.spec_from_file_location("app", {path!r})
mod = importlib.util.module_from_spec(spec)
sys.modules["app"] = mod
spec.loader.exec_module(mod)
t1 = time.perf_counter()
from cdp.entry.aws import runtime
name = {name!r}
if name == "api":
    runtime.build_app()
elif name in ("cleanup", "keepalive"):
    runtime.objects()
elif name == "replies_stream":
    from cdp.settings import Settings
    from cdp.adapters.store.dynamodb import DynamoChannelRegistry, dynamodb_client
    Settings(); DynamoChannelRegistry(); dynamodb_client()
t2 = time.perf_counter()
print(json.dumps({{"import": (t1 - t0) * 1000, "build": (t2 - t0) * 1000}}))
"""


def run(name: str, importtime: bool = False) -> subprocess.CompletedProcess:
    fn = ROOT / "functions" / name
    code = PROBE.format(fn=str(fn), layer=str(ROOT / "layers" / "common"), path=str(fn / "app.py"), name=name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDP_", "AWS_"))}
    env.update(ENV)
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), "-c", code]
    return subprocess.run(cmd, env=env, cwd=fn, capture_output=True, text=True, check=True)


def top_imports(name: str, n: int = 4) -> str:
    rows = []
    for line in run(name, importtime=True).stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cum, mod = line[len("import time:"):].split("|")
        if mod.startswith(" ") and not mod.startswith("  "):  # top level (one space after the bar)
            rows.append((int(cum) / 1000, mod.strip()))
    rows = [r for r in rows if r[1] not in ("site", "encodings", "json", "importlib.util")]
    return ", ".join(f"{m} {ms:.0f}" for ms, m in sorted(rows, reverse=True)[:n])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("functions", nargs="*", default=list(TARGETS_MS))
    args = ap.parse_args()
    ok = True
    print(f"{'function':<16}{'import ms':>10}{'+build ms':>10}{'target':>8}  top imports (cumulative ms)")
    for name in args.functions:
        runs = [json.loads(run(name).stdout.strip().splitlines()[-1]) for _ in range(args.runs)]
        imp = statistics.median(r["import"] for r in runs)
        build = statistics.median(r["build"] for r in runs)
        target = TARGETS_MS.get(name)
        flag = "" if target is None or imp <= target else "  OVER"
        ok &= not flag
        print(f"{name:<16}{imp:>10.0f}{build:>10.0f}{target or '-':>8}{flag}  {top_imports(name)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
