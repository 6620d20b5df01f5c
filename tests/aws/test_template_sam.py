"""The template as AWS SAM sees it: `sam validate --lint` and `sam build` (no container), offline but for
PyPI. `make test` installs the SAM CLI in .sam-venv; elsewhere these tests skip unless CI is set."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAM = Path(os.environ.get("CDP_SAM") or ROOT / ".sam-venv" / "bin" / "sam")  # CDP_SAM: a SAM CLI elsewhere

pytestmark = pytest.mark.skipif(not SAM.exists() and not os.environ.get("CI"),
                                reason="SAM CLI not installed (make sam)")


def run_sam(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    assert SAM.exists(), "the SAM CLI is missing: `make test` installs it in .sam-venv"
    # `sam build` without a container needs python3.13 on PATH; this interpreter is one.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "SAM_CLI_TELEMETRY": "0"}
    return subprocess.run([str(SAM), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_sam_validate_lint():
    r = run_sam("validate", "--lint", "-t", "template.yaml", "--region", "us-east-1", cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "is a valid SAM Template" in r.stdout + r.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """`sam build` (no container) of a copy of the work tree; returns the build directory."""
    tmp_path = tmp_path_factory.mktemp("sam")
    # Build from a copy so the work tree's .aws-sam and caches are untouched.
    src = tmp_path / "src"
    skip = shutil.ignore_patterns(".venv", ".sam-venv", ".git", ".aws-sam", "__pycache__", ".pytest_cache")

    def ignore(folder: str, names: list[str]) -> set[str]:
        top_level_data = {"data"} if Path(folder) == ROOT else set()  # runtime files, not cdp/data
        return set(skip(folder, names)) | (top_level_data & set(names))

    shutil.copytree(ROOT, src, ignore=ignore)
    r = run_sam("build", "--build-dir", str(tmp_path / "build"), cwd=src)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return tmp_path / "build"


def test_sam_build_without_container(built):
    layer = built / "CommonLayer" / "python"
    assert (layer / "cdp" / "data" / "o200k_base.tiktoken.gz").exists()
    assert not (layer / "boto3").exists() and not (layer / "aws_lambda_powertools" / "event_handler").exists()
    assert (built / "InteractionsFunction" / "nacl").exists()


# Imports a built function's handler the way Lambda would: its code folder and the layer's python/ on the
# path. The layer's compiled wheels are arm64 (this machine may not be), so the interpreter's own
# site-packages come first for them; `app` and `cdp` must come from the artifact (checked).
IMPORT_HANDLER = r"""
import importlib, json, os, sys
fn_dir, layer, handler = sys.argv[1:4]
sys.path[:] = [p for p in sys.path if "site-packages" in p or "lib/python" in p] + [fn_dir, layer]
module, _, attr = handler.rpartition(".")
mod = importlib.import_module(module)
obj = getattr(mod, attr)
import cdp
print(json.dumps({"callable": callable(obj), "module_file": mod.__file__, "cdp": cdp.__file__}))
"""


def test_every_built_handler_resolves_to_a_callable(built):
    from tests.support import iam

    cfn = iam.transform()
    functions = {lid: r["Properties"] for lid, r in cfn["Resources"].items() if r["Type"] == "AWS::Lambda::Function"}
    assert len(functions) >= 6
    layer = built / "CommonLayer" / "python"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith(("CDP_", "AWS_"))}
    for lid, props in functions.items():
        fn_dir = built / lid
        handler = props["Handler"]
        if handler.endswith(".sh"):  # the stream function: the Web Adapter runs run.sh -> uvicorn app:app
            script = fn_dir / handler
            assert script.exists() and os.access(script, os.X_OK), f"{lid}: {handler} missing or not executable"
            target = re.search(r"uvicorn .* (\w+):(\w+)\s*$", script.read_text().strip())
            assert target, f"{lid}: {handler} does not start uvicorn on module:app"
            handler = f"{target.group(1)}.{target.group(2)}"
        module_file = fn_dir / (handler.rpartition(".")[0].replace(".", "/") + ".py")
        assert module_file.exists(), f"{lid}: {module_file} is not in the built artifact"
        r = subprocess.run([sys.executable, "-c", IMPORT_HANDLER, str(fn_dir), str(layer), handler],
                           capture_output=True, text=True, timeout=120, env=env, cwd=str(built))
        assert r.returncode == 0, f"{lid}: {handler} does not import: {r.stderr[-2000:]}"
        out = json.loads(r.stdout.strip().splitlines()[-1])
        assert out["callable"], f"{lid}: {handler} is not callable"
        assert out["module_file"].startswith(str(fn_dir)), out
        assert out["cdp"].startswith(str(layer)), f"{lid}: cdp imported from {out['cdp']}, not the layer"
