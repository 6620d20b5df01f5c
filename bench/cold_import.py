"""Cold import time of each Lambda handler module (functions/<name>/app.py) against the DEPLOYED layer.

    python bench/cold_import.py [--runs 5] [--layer DIR] [function ...]

The layer is built with layers/common/Makefile (what `sam build` runs; this machine's platform), so the
modules imported are the deployed ones, compiled to bytecode as deployed. Each run is a new isolated
interpreter (`-I -S`: no site-packages; the function folder, the layer's python/ and boto3 on the path,
as Lambda lays them out) that never writes bytecode (`-B`: Lambda's /opt and /var/task are read-only,
so a module without shipped bytecode is compiled again on every cold start). boto3 comes with the
Lambda runtime: it is installed here once, compiled, like the runtime's. Columns:
  import      median wall time of importing the handler module (interpreter start-up excluded)
  +build      import plus building what the first invocation builds (settings, stores, REST client,
              service, FastAPI app), still without network (no secret id, so no Secrets Manager call)
  no bytecode the same import from a copy of the layer without its __pycache__ (the layer as built
              before the Makefile compiled it), and the ratio to it
  top         the biggest top-level imports of one run (`python -X importtime`, cumulative ms)
Targets (issue 4): api < 300 ms; cleanup, keepalive < 150 ms (import).

Measuring in the project's own venv instead (as this bench did before) is misleading both ways: its
modules have cached bytecode (faster than Lambda without shipped bytecode) and it holds dev-only
packages that change what gets imported (httpx imports its command line, rich and click, when they
are installed: +75 ms).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS_MS = {"api": 300, "stream": 300, "cleanup": 150, "keepalive": 150, "replies_stream": 150}
ENV = {"CDP_STORE": "dynamodb", "CDP_REPLIES_TABLE": "bench-replies", "CDP_STATE_TABLE": "bench-state",
       "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
       "GUILD_ID": "1100000000000000001", "COZE_BOT_ID": "1300000000000000001",
       "BOT_TOKEN": "bench.bot.token", "USER_AUTHORIZATION": "bench.user.token", "PROXY_SECRET": "sk-bench",
       "POWERTOOLS_SERVICE_NAME": "coze-discord-proxy", "POWERTOOLS_METRICS_NAMESPACE": "CozeDiscordProxy"}
PLATFORMS = {"aarch64": "manylinux2014_aarch64", "arm64": "manylinux2014_aarch64", "x86_64": "manylinux2014_x86_64"}

PROBE = """
import importlib.util, json, sys, time
t0 = time.perf_counter()
sys.path[:0] = [{fn!r}, {layer!r}, {boto!r}]
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
assert not [m for m in sys.modules if m.split(".")[0] in ("rich", "pytest")], "a dev-only import"
print(json.dumps({{"import": (t1 - t0) * 1000, "build": (t2 - t0) * 1000}}))
"""


def build_layer(dest: Path) -> Path:
    """layers/common/Makefile's build for this machine (same packages, same pruning and bytecode)."""
    plat = PLATFORMS.get(platform.machine(), "manylinux2014_x86_64")
    subprocess.run(["make", "-s", "-C", str(ROOT / "layers" / "common"), "build-CommonLayer",
                    f"ARTIFACTS_DIR={dest}", f"PLATFORM={plat}", f"PIP={sys.executable} -m pip",
                    f"PYTHON={sys.executable}"], check=True, stdout=subprocess.DEVNULL)
    return dest / "python"


def install_boto3(dest: Path) -> Path:
    """boto3 at the version of the project's lock, compiled: what the Lambda runtime provides."""
    lock = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    version = re.search(r"^boto3==([\w.]+)", lock, re.M)
    spec = f"boto3=={version.group(1)}" if version else "boto3"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--target", str(dest), spec], check=True, stderr=subprocess.DEVNULL)
    return dest


def without_bytecode(layer: Path, dest: Path) -> Path:
    shutil.copytree(layer, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def run(name: str, layer: Path, boto: Path, importtime: bool = False) -> subprocess.CompletedProcess:
    fn = ROOT / "functions" / name
    code = PROBE.format(fn=str(fn), layer=str(layer), boto=str(boto), path=str(fn / "app.py"), name=name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDP_", "AWS_", "PYTHON"))}
    env.update(ENV)
    cmd = [sys.executable, "-I", "-S", "-B", *(["-X", "importtime"] if importtime else []), "-c", code]
    r = subprocess.run(cmd, env=env, cwd="/", capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{name}: the import failed:\n{r.stderr[-3000:]}")
    return r


def measure(name: str, layer: Path, boto: Path, runs: int) -> tuple[float, float]:
    out = [json.loads(run(name, layer, boto).stdout.strip().splitlines()[-1]) for _ in range(runs)]
    return statistics.median(r["import"] for r in out), statistics.median(r["build"] for r in out)


def top_imports(name: str, layer: Path, boto: Path, n: int = 4) -> str:
    rows = []
    for line in run(name, layer, boto, importtime=True).stderr.splitlines():
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
    ap.add_argument("--layer", help="an already built layer's python/ folder (default: build one)")
    ap.add_argument("functions", nargs="*", default=list(TARGETS_MS))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cdp-cold-"))
    try:
        layer = Path(args.layer) if args.layer else build_layer(tmp / "layer")
        boto = install_boto3(tmp / "boto")
        bare = without_bytecode(layer, tmp / "bare")
        ok = True
        print(f"{'function':<16}{'import ms':>10}{'+build ms':>10}{'target':>8}{'no bytecode':>13}{'ratio':>7}"
              "  top imports (cumulative ms)")
        for name in args.functions:
            imp, build = measure(name, layer, boto, args.runs)
            before, _ = measure(name, bare, boto, args.runs)
            target = TARGETS_MS.get(name)
            flag = "" if target is None or imp <= target else "  OVER"
            ok &= not flag
            print(f"{name:<16}{imp:>10.0f}{build:>10.0f}{target or '-':>8}{before:>13.0f}{before / imp:>6.1f}x"
                  f"{flag}  {top_imports(name, layer, boto)}")
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
