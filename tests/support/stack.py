"""The running stack for end-to-end tests: a FakeDiscord on loopback and `cdp serve` as a real
process, per mode, plus what the tests read back from the fake.

Modes (one shared suite): `memory` = `cdp serve` with API + listener in one process;
`dynamodb` = `cdp serve --no-listener` + `cdp listener`, both on a moto server.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import openai
import pytest
from cdp.sim import FakeDiscord

from tests.support.proc import CdpProcess, free_port, settings_env

API_KEY = "sk-test-key-1"


def secret_values(env: dict[str, str]) -> list[str]:
    """Every secret a process was given, read from its environment by cdp.settings.SECRET_SETTINGS'
    names (each key or token of a list, the proxy's password) — not through Settings.secrets(), so a
    secret that method forgets is still looked for."""
    from urllib.parse import urlsplit

    from cdp.settings import SECRET_SETTINGS

    out: list[str] = []
    for name in SECRET_SETTINGS:
        value = env.get(name, "")
        if name == "PROXY_URL":
            out += [p for p in [urlsplit(value).password if value else None] if p]
        else:
            out += [v.strip() for v in value.split(",") if v.strip()]
    return out


def assert_no_secret_in(text: str, secrets: Iterable[str], where: str = "the logs") -> None:
    """No secret, nor its base64 form (standard or URL-safe, padded or not), in any line of `text`."""
    for secret in set(secrets):
        raw = secret.encode()
        for form in {secret, base64.b64encode(raw).decode().rstrip("="),
                     base64.urlsafe_b64encode(raw).decode().rstrip("=")}:
            for n, line in enumerate(text.splitlines(), 1):
                assert form not in line, f"a secret ({form[:4]}…) leaked into {where}, line {n}"
MODES = [m for m in os.environ.get("CDP_E2E_MODES", "memory,dynamodb").split(",") if m]


@dataclass
class Stack:
    fake: FakeDiscord
    api: CdpProcess
    mode: str
    extra: list[CdpProcess] = field(default_factory=list)
    moto: object | None = None

    @property
    def url(self) -> str:
        return self.api.url

    def client(self, **kw) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.url + "/v1", api_key=kw.pop("api_key", API_KEY),
                                  max_retries=kw.pop("max_retries", 0), **kw)

    def logs(self) -> str:
        return "\n".join(p.log() for p in [self.api, *self.extra])

    def stop(self, check_logs: bool = True) -> None:
        for p in [self.api, *self.extra]:
            p.stop()
        if self.moto is not None:
            self.moto.stop()
        if check_logs:
            self.assert_no_secret_logged()

    def assert_no_secret_logged(self) -> None:
        """Every log line of every process, for every secret it was given and its base64 form."""
        for p in [self.api, *self.extra]:
            assert_no_secret_in(p.log(), secret_values(p.env), f"the log of cdp {' '.join(p.args)}")


def start_stack(mode: str, fake: FakeDiscord, listener_args: tuple[str, ...] = (), **env: str) -> Stack:
    port = free_port()
    base_env = settings_env(fake, PORT=str(port), HOST="127.0.0.1", **env)
    if mode == "memory":
        api = CdpProcess(["serve"], base_env, port).start()
        stack = Stack(fake, api, mode)
    elif mode == "dynamodb":
        # moto in server mode, tables created from template.yaml's own definitions
        from tests.support.aws import aws_env, create_tables, start_moto_server, unique_prefix

        moto = start_moto_server()
        prefix = unique_prefix("e2e")
        create_tables(moto.client(), prefix)
        ddb_env = {**base_env, **aws_env(moto, prefix)}
        health_port = free_port()
        listener = CdpProcess(["listener", "--health-port", str(health_port), *listener_args], ddb_env,
                              health_port).start()
        api = CdpProcess(["serve", "--no-listener"], ddb_env, port).start()
        stack = Stack(fake, api, mode, [listener], moto)
    else:
        raise ValueError(mode)
    try:
        for p in stack.extra:
            p.wait_healthy()
        api.wait_healthy()
    except BaseException:
        stack.stop(check_logs=False)  # the start-up error is the news
        raise
    return stack


@pytest.fixture(scope="module", params=MODES)
def stack(request, fake: FakeDiscord) -> Iterator[Stack]:
    s = start_stack(request.param, fake)
    yield s
    s.stop()  # asserts that no secret (nor its base64 form) reached a log line
    cfg = fake.config
    assert_no_secret_in(s.logs(), [cfg.bot_token, *cfg.user_tokens, "sk-test-key-1", "sk-test-key-2"])


def coze_reply_text(fake: FakeDiscord, marker: str) -> str:
    """The Coze bot's final text in Discord for the prompt containing `marker` (joined reply parts)."""
    channel_ids = {c["id"] for c in fake.created_channels()} | {fake.config.channel_id}
    for cid in channel_ids:
        msgs = fake.messages(cid)
        prompts = [m for m in msgs if marker in (m.get("content") or "") and not m["author"].get("bot")]
        if prompts:
            pid = prompts[-1]["id"]
            parts = sorted((m for m in msgs if (m.get("message_reference") or {}).get("message_id") == pid),
                           key=lambda m: int(m["id"]))
            return "".join(m.get("content") or "" for m in parts)
    raise AssertionError(f"no prompt with {marker!r} reached the fake Discord")


def prompt_messages(fake: FakeDiscord, marker: str) -> list[dict]:
    channel_ids = {c["id"] for c in fake.created_channels()} | {fake.config.channel_id}
    out = []
    for cid in channel_ids:
        out += [m for m in fake.messages(cid) if marker in (m.get("content") or "")
                and not m["author"].get("bot")]
    return out
