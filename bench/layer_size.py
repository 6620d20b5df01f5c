"""Unzipped size of the Lambda layer: layers/common/requirements.txt installed for the Lambda
platform (python3.13, arm64 manylinux wheels) plus the cdp package, as `sam build` lays it out.

    python bench/layer_size.py [--arch arm64|x86_64] [--keep DIR]

Builds with layers/common/Makefile (what `sam build` runs). boto3/botocore come with the Lambda
runtime and must not be in the layer (checked).
Target (issue 4): < 25 MB unzipped. Lambda's hard limit: 250 MB for function + layers. The layer ships
python3.13 bytecode (layers/common/Makefile), counted here: the target is missed by that choice.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYER = ROOT / "layers" / "common"
TARGET_MB = 25.0
PLATFORMS = {"arm64": "manylinux2014_aarch64", "x86_64": "manylinux2014_x86_64"}


def tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", choices=sorted(PLATFORMS), default="arm64")
    ap.add_argument("--keep", help="keep the built layer in this directory")
    args = ap.parse_args()
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="cdp-layer-"))
    target = tmp / "python"
    if target.exists():
        shutil.rmtree(target)
    # The same Makefile target `sam build` runs (BuildMethod: makefile), so this is the deployed size.
    subprocess.run(["make", "-s", "-C", str(LAYER), "build-CommonLayer", f"ARTIFACTS_DIR={tmp}",
                    f"PLATFORM={PLATFORMS[args.arch]}", f"PIP={sys.executable} -m pip", f"PYTHON={sys.executable}"],
                   check=True)
    bundled_boto = [p.name for p in target.iterdir() if p.name.split("-")[0] in ("boto3", "botocore")]
    sizes: dict[str, int] = {}
    for p in target.iterdir():
        key = p.name.split("-")[0].removesuffix(".py").lower() if p.name.endswith(".dist-info") else p.name
        sizes[key] = sizes.get(key, 0) + (tree_size(p) if p.is_dir() else p.stat().st_size)
    total = sum(sizes.values())
    bytecode = sum(p.stat().st_size for p in target.rglob("*.pyc"))
    print(f"layer ({args.arch}, python3.13) unzipped: {total / 1e6:.1f} MB   target < {TARGET_MB:.0f} MB   "
          f"({(total - bytecode) / 1e6:.1f} MB of files + {bytecode / 1e6:.1f} MB of bytecode, which makes "
          "cold imports faster: bench/cold_import.py)")
    for name, size in sorted(sizes.items(), key=lambda kv: -kv[1])[:10]:
        print(f"  {name:<28}{size / 1e6:>8.1f} MB")
    biggest, big = max(sizes.items(), key=lambda kv: kv[1])
    print(f"without {biggest}: {(total - big) / 1e6:.1f} MB")
    print("boto3/botocore bundled:", ", ".join(bundled_boto) or "no")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if total / 1e6 < TARGET_MB and not bundled_boto else 1


if __name__ == "__main__":
    sys.exit(main())
