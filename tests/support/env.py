"""A process environment without settings: tests of Settings start from the defaults."""

from __future__ import annotations

import os

import pytest

KEEP = ("PATH", "HOME", "PYTHON", "LANG", "LC_", "TMP")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No upper-case variable but the system's, and a working directory without a stray .env."""
    for name in list(os.environ):
        if name.isupper() and not name.startswith(KEEP):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
