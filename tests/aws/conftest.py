"""Fixtures for the AWS path: one moto server per xdist worker (session), fresh tables per module."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support import aws as support


@pytest.fixture(scope="session")
def moto():
    with support.moto_server() as server:
        yield server


@pytest.fixture(scope="module")
def tables(moto):
    """Tables from template.yaml under a prefix unique to this module; returns (prefix, names)."""
    prefix = support.unique_prefix()
    names = support.create_tables(moto.client(), prefix)
    return prefix, names


@pytest.fixture
def aws_env(moto, tables, monkeypatch):
    """Points cdp at the moto server and this module's tables (environment, as on Lambda)."""
    prefix, _ = tables
    env = support.aws_env(moto, prefix)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture(autouse=True)
def _fake_credentials(monkeypatch):
    """Never reach real AWS from these tests: fake credentials, region fixed."""
    for k, v in support.FAKE_CREDENTIALS.items():
        monkeypatch.setenv(k, v)
