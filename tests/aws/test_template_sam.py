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
    """The build, and (same test, so xdist builds once) every handler of the artifact resolving."""
    check_built_handlers(built)
    layer = built / "CommonLayer" / "python"
    assert (layer / "cdp" / "data" / "o200k_base.tiktoken.gz").exists()
    assert not (layer / "boto3").exists() and not (layer / "aws_lambda_powertools" / "event_handler").exists()
    assert not (layer / "requests").exists() and not (layer / "urllib3").exists()  # see tests/unit/test_tokens.py
    # Shipped compiled for the runtime's python3.13 (a read-only /opt would compile every import again
    # on each cold start: bench/cold_import.py), for every module, without timestamps to go stale.
    sources = [p for p in layer.rglob("*.py")]
    missing = [p for p in sources if not (p.parent / "__pycache__" / f"{p.stem}.cpython-313.pyc").exists()]
    assert sources and not missing, f"{len(missing)} modules without bytecode, e.g. {missing[:3]}"
    flags = int.from_bytes((layer / "cdp" / "__pycache__" / "settings.cpython-313.pyc").read_bytes()[4:8], "little")
    assert flags == 0b01, "not unchecked-hash bytecode (PEP 552)"
    kept = {p.name for p in (layer / "aws_lambda_powertools" / "utilities").iterdir()} - {"__pycache__"}
    assert kept == {"__init__.py", "parameters", "typing", "jmespath_utils"}, kept
    assert (built / "InteractionsFunction" / "nacl").exists()


# Imports a built function's handler the way Lambda would: its code folder and the layer's python/ on the
# path. The layer's compiled wheels are arm64 (this machine may not be), so the interpreter's own
# site-packages come first for them; `app` and `cdp` must come from the artifact (checked).
IMPORT_HANDLERS = r"""
import importlib.util, json, os, sys
layer, specs = sys.argv[1], json.loads(sys.argv[2])
sys.path[:] = [p for p in sys.path if "site-packages" in p or "lib/python" in p] + [layer]
out = {}
for lid, (fn_dir, handler) in specs.items():
    module, _, attr = handler.rpartition(".")
    path = os.path.join(fn_dir, module.replace(".", "/") + ".py")
    sys.path.append(fn_dir)
    try:
        spec = importlib.util.spec_from_file_location(f"built_{lid}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        out[lid] = {"callable": callable(getattr(mod, attr, None)), "module_file": mod.__file__}
    except Exception as exc:
        out[lid] = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        sys.path.remove(fn_dir)
import cdp
print(json.dumps({"handlers": out, "cdp": cdp.__file__}))
"""


def check_built_handlers(built):
    """Every function's handler, from the transformed template, is a file and a callable in the artifact
    (one interpreter for all: the handlers' modules are loaded under distinct names)."""
    from tests.support import iam

    cfn = iam.transform()
    functions = {lid: r["Properties"] for lid, r in cfn["Resources"].items() if r["Type"] == "AWS::Lambda::Function"}
    assert len(functions) >= 6
    layer = built / "CommonLayer" / "python"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith(("CDP_", "AWS_"))}
    specs: dict[str, tuple[str, str]] = {}
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
        specs[lid] = (str(fn_dir), handler)
    r = subprocess.run([sys.executable, "-c", IMPORT_HANDLERS, str(layer), json.dumps(specs)],
                       capture_output=True, text=True, timeout=120, env=env, cwd=str(built))
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["cdp"].startswith(str(layer)), f"cdp imported from {out['cdp']}, not the layer"
    for lid, (fn_dir, handler) in specs.items():
        got = out["handlers"][lid]
        assert "error" not in got, f"{lid}: {handler} does not import: {got.get('error')}"
        assert got["callable"], f"{lid}: {handler} is not callable"
        assert got["module_file"].startswith(fn_dir), (lid, got)
