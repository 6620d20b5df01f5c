"""Helpers for the operator tools' tests: Ed25519 keys made here, requests signed like Discord's."""

from __future__ import annotations

import json
import time

import pytest
from cdp.settings import Settings
from nacl.signing import SigningKey

from tests.support.proc import settings_env


class Signer:
    """A Discord application's key pair: signs interaction requests as Discord does."""

    def __init__(self) -> None:
        self.key = SigningKey.generate()
        self.public_key = self.key.verify_key.encode().hex()

    def headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        sig = self.key.sign(ts.encode() + body).signature.hex()
        return {"X-Signature-Ed25519": sig, "X-Signature-Timestamp": ts, "Content-Type": "application/json"}

    def signed(self, payload: dict, timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
        body = json.dumps(payload).encode()
        return body, self.headers(body, timestamp)


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer()


def sim_settings(fake, **over) -> Settings:
    """Settings (no environment, no .env) pointing at a running FakeDiscord."""
    env = settings_env(fake)
    env.pop("LOG_LEVEL", None)
    env.update({k: str(v) for k, v in over.items()})
    return Settings(_env_file=None, **env)


__all__ = ["Signer", "sim_settings"]
