"""Cold start of the interactions function: import of functions/interactions/app.py, then one signed
PING answered, each in a fresh interpreter (Discord allows 3 s for the whole round trip).

    python bench/interactions_import.py [--runs 5]

Prints, in ms: the median import time, the median first PING (signature check + PONG) and the heavy
modules that must NOT be imported on that path (fastapi, pydantic, hikari, boto3, uvicorn, httpx).
Exit status 1 if one of them was imported or the import took more than --limit ms (default 300).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("fastapi", "pydantic", "pydantic_settings", "hikari", "boto3", "botocore", "uvicorn", "httpx",
             "aws_lambda_powertools")

PROBE = r"""
import importlib.util, json, sys, time, os
t0 = time.perf_counter()
sys.path[:0] = [{fn!r}, {layer!r}]
spec = importlib.util.spec_from_file_location("app", {path!r})
mod = importlib.util.module_from_spec(spec)
sys.modules["app"] = mod
spec.loader.exec_module(mod)
t1 = time.perf_counter()
heavy = sorted(m for m in {forbidden!r} if m in sys.modules)
# one signed PING, as Discord sends it (key pair made before the clock starts again)
from nacl.signing import SigningKey
key = SigningKey.generate()
os.environ["DISCORD_PUBLIC_KEY"] = key.verify_key.encode().hex()
body = b'{{"type":1,"id":"1","application_id":"1","token":"t","version":1}}'
ts = str(int(time.time()))
sig = key.sign(ts.encode() + body).signature.hex()
event = {{"httpMethod": "POST", "path": "/interactions", "body": body.decode(), "isBase64Encoded": False,
          "headers": {{"X-Signature-Ed25519": sig, "X-Signature-Timestamp": ts, "Content-Type": "application/json"}}}}
t2 = time.perf_counter()
resp = mod.handler(event, None)
t3 = time.perf_counter()
assert resp["statusCode"] == 200 and json.loads(resp["body"]) == {{"type": 1}}, resp
print(json.dumps({{"import_ms": (t1 - t0) * 1000, "ping_ms": (t3 - t2) * 1000, "heavy": heavy}}))
"""


def probe() -> dict:
    fn = ROOT / "functions" / "interactions"
    code = PROBE.format(fn=str(fn), layer=str(ROOT / "layers" / "common"), path=str(fn / "app.py"),
                        forbidden=FORBIDDEN)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "GUILD_ID": "1100000000000000001"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--limit", type=float, default=300.0, help="max median import time in ms")
    args = ap.parse_args()
    runs = [probe() for _ in range(args.runs)]
    imp = statistics.median(r["import_ms"] for r in runs)
    ping = statistics.median(r["ping_ms"] for r in runs)
    heavy = sorted({m for r in runs for m in r["heavy"]})
    print(f"interactions cold import: {imp:.1f} ms (median of {args.runs}; min {min(r['import_ms'] for r in runs):.1f}, "
          f"max {max(r['import_ms'] for r in runs):.1f})")
    print(f"first signed PING answered in: {ping:.1f} ms")
    print(f"heavy modules imported: {', '.join(heavy) if heavy else 'none'}")
    return 1 if heavy or imp > args.limit else 0


if __name__ == "__main__":
    sys.exit(main())
