"""The template as AWS SAM sees it: `sam validate --lint` and `sam build` (no container), offline but for
PyPI. `make test` installs the SAM CLI in .sam-venv; elsewhere these tests skip unless CI is set."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAM = ROOT / ".sam-venv" / "bin" / "sam"

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


def test_sam_build_without_container(tmp_path):
    # Build from a copy so the work tree's .aws-sam and caches are untouched.
    src = tmp_path / "src"
    skip = shutil.ignore_patterns(".venv", ".sam-venv", ".git", ".aws-sam", "__pycache__", ".pytest_cache")

    def ignore(folder: str, names: list[str]) -> set[str]:
        top_level_data = {"data"} if Path(folder) == ROOT else set()  # runtime files, not cdp/data
        return set(skip(folder, names)) | (top_level_data & set(names))

    shutil.copytree(ROOT, src, ignore=ignore)
    r = run_sam("build", "--build-dir", str(tmp_path / "build"), cwd=src)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    layer = tmp_path / "build" / "CommonLayer" / "python"
    assert (layer / "cdp" / "data" / "o200k_base.tiktoken.gz").exists()
    assert not (layer / "boto3").exists() and not (layer / "aws_lambda_powertools" / "event_handler").exists()
    assert (tmp_path / "build" / "InteractionsFunction" / "nacl").exists()
