"""`cdp serve` and `cdp listener` run on uvloop when it is installed (uvicorn[standard] brings it)."""

from __future__ import annotations

import asyncio

import pytest
from cdp.entry.cli import fast_loop_factory


def test_uvloop_is_used_when_installed():
    uvloop = pytest.importorskip("uvloop")
    assert fast_loop_factory() is uvloop.new_event_loop
    assert asyncio.run(asyncio.sleep(0, "ok"), loop_factory=fast_loop_factory()) == "ok"


def test_asyncio_loop_without_uvloop(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop -> ImportError
    assert fast_loop_factory() is None
