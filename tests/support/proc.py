"""Real processes for end-to-end tests: `cdp serve` / `cdp listener` on free loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CdpProcess:
    """`python -m cdp.entry.cli <args>` with a clean environment; its log is captured to a file."""

    def __init__(self, args: list[str], env: dict[str, str], port: int | None = None) -> None:
        self.args = args
        self.port = port
        self.env = env
        self.log_path = Path(tempfile.mkstemp(prefix="cdp-log-", suffix=".txt")[1])
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> CdpProcess:
        keep = {k: v for k, v in os.environ.items()
                if k in ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "SYSTEMROOT", "TMPDIR")}
        env = {**keep, **self.env}
        # Run where no stray .env can leak settings in.
        cwd = tempfile.mkdtemp(prefix="cdp-cwd-")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "cdp.entry.cli", *self.args], env=env, cwd=cwd,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def wait_healthy(self, timeout: float = 30.0, path: str = "/healthz") -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"cdp exited with {self.proc.returncode}:\n{self.log()}")
            try:
                r = httpx.get(self.url + path, timeout=2)
                last = r
                if r.status_code == 200:
                    return r.json()
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"cdp not healthy within {timeout}s (last: {last and last.text}):\n{self.log()}")

    def wait_exit(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "_log", None):
            self._log.close()


def settings_env(sim, **extra: str) -> dict[str, str]:
    """The original's settings, pointed at a running FakeDiscord."""
    cfg = sim.config
    env = {
        "DISCORD_API_BASE": sim.base_url,
        "BOT_TOKEN": cfg.bot_token,
        "GUILD_ID": cfg.guild_id,
        "COZE_BOT_ID": cfg.coze_bot_ids[0],
        "CHANNEL_ID": cfg.channel_id,
        "USER_AUTHORIZATION": ",".join(cfg.user_tokens),
        "PROXY_SECRET": "sk-test-key-1,sk-test-key-2",
        "CHANNEL_AUTO_DEL_TIME": "1",
        "REPLY_IDLE_TIMEOUT": "1.5",
        "REQUEST_OUT_TIME": "20",
        "STREAM_REQUEST_OUT_TIME": "20",
        "COZE_BOT_STAY_ACTIVE_ENABLE": "0",
        "LOG_LEVEL": "DEBUG",
        # The suites run many prompts at once through 2 accounts: no per-account limits (defaults 1 in
        # flight, 2 s apart); tests/e2e/test_queue_load.py and tests/aws/test_leases.py test them.
        "ACCOUNT_MAX_CONCURRENT": "50",
        "ACCOUNT_MIN_GAP": "0",
    }
    env.update(extra)
    return env


def run_cli_json(fake, *args: str, **env: str) -> dict:
    """Run `cdp <args>` once against `fake`; its last JSON result line plus {"exit": code}.
    Also checks that no secret reached its output."""
    import json

    proc = CdpProcess(list(args), settings_env(fake, **env)).start()
    try:
        code = proc.wait_exit(60)
    finally:
        proc.stop()
    out = proc.log()
    for secret in [fake.config.bot_token, *fake.config.user_tokens]:
        assert secret not in out, "a secret leaked into the output"
    results = [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"level"' not in line]
    assert results, out
    return {"exit": code, **results[-1]}
