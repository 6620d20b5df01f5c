"""Dependencies are declared once, in pyproject.toml: the Lambda requirements files must say the same.

SAM builds the layer from a copy of layers/common alone (pyproject is out of its reach), so the
requirements files stay in the tree; this test keeps them equal to pyproject, minus what a Lambda does
not bundle.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "layers" / "common" / "requirements.txt"
INTERACTIONS = ROOT / "functions" / "interactions" / "requirements.txt"

NOT_IN_LAYER = {
    "hikari": "the gateway listener only (ECS image, installed from pyproject)",
    "websockets": "the gateway listener only",
    "aiohttp-socks": "the gateway listener only (PROXY_URL=socks5:// for hikari/aiohttp)",
    "boto3": "comes with the Lambda runtime",
    "discord-interactions": "the interactions function only (functions/interactions/requirements.txt)",
}
LAYER_WITHOUT_EXTRAS = {"uvicorn"}  # [standard]'s uvloop/httptools/watchfiles serve no Lambda


def _pyproject() -> dict[str, Requirement]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    return {r.name: r for r in map(Requirement, deps)}


def _requirements(path: Path) -> dict[str, str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return {r.name: str(r) for r in map(Requirement, filter(None, lines))}


def test_layer_requirements_equal_pyproject() -> None:
    expected = {}
    for name, req in _pyproject().items():
        if name in NOT_IN_LAYER:
            continue
        if name in LAYER_WITHOUT_EXTRAS:
            req.extras = set()
        expected[name] = str(req)
    assert _requirements(LAYER) == expected, f"{LAYER.relative_to(ROOT)} differs from pyproject.toml"


def test_interactions_requirements_equal_pyproject() -> None:
    assert _requirements(INTERACTIONS) == {"discord-interactions": str(_pyproject()["discord-interactions"])}


def test_exceptions_name_real_dependencies() -> None:
    assert set(NOT_IN_LAYER) | LAYER_WITHOUT_EXTRAS <= set(_pyproject())
