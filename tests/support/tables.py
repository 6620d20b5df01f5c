"""Tables the suites print at the end of `make test` (the fault run, the load run): under pytest-xdist
a worker's output is not shown, so each table is written to a folder the controller created, and
tests/conftest.py prints them in the terminal summary."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

ENV = "CDP_TEST_TABLES"


def start() -> Path:
    """Controller: a fresh folder, handed to the workers through the environment."""
    folder = Path(tempfile.mkdtemp(prefix="cdp-tables-"))
    os.environ[ENV] = str(folder)
    return folder


def report(title: str, text: str) -> None:
    """A test: keep `text` under `title` for the summary (nothing if the suite did not start a folder)."""
    folder = os.environ.get(ENV)
    if folder and Path(folder).is_dir():
        name = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
        (Path(folder) / f"{name}.md").write_text(f"## {title}\n\n{text.strip()}\n")


def collected(folder: Path) -> list[str]:
    return [p.read_text() for p in sorted(folder.glob("*.md"))]
