"""Dependencies are declared once, in pyproject.toml: the Lambda requirements files must say the same,
and every install uses a lock made from them (`make lock`: pinned, with hashes).

SAM builds the layer from a copy of layers/common alone (pyproject is out of its reach), so the
requirements files stay in the tree; this test keeps them equal to pyproject, minus what a Lambda does
not bundle. The locks: requirements.lock (project + dev, `make install`), layers/common/requirements.lock
(the layer's Makefile), listener/requirements.lock (the listener image), functions/interactions/
requirements.txt (SAM installs that name; its input is requirements.in), requirements-image.lock (the
single-host image, Dockerfile).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "layers" / "common" / "requirements.txt"
INTERACTIONS = ROOT / "functions" / "interactions" / "requirements.in"
# lock -> (its input's requirements, extras of pyproject included)
LOCKS = {
    "requirements.lock": "pyproject+dev",
    "layers/common/requirements.lock": "layers/common/requirements.txt",
    "listener/requirements.lock": "pyproject",
    "requirements-image.lock": "pyproject",  # the single-host image (Dockerfile), linux/amd64
    "functions/interactions/requirements.txt": "functions/interactions/requirements.in",
}
# Lower bounds past known advisories, in pyproject and in every lock that has the package.
ADVISORY_FLOORS = {"starlette": "0.49.1", "h11": "0.16"}

NOT_IN_LAYER = {
    "hikari": "the gateway listener only (ECS image, installed from pyproject)",
    "websockets": "the gateway listener only",
    "aiohttp-socks": "the gateway listener only (PROXY_URL=socks5:// for hikari/aiohttp)",
    "boto3": "comes with the Lambda runtime",
    "discord-interactions": "the interactions function only (functions/interactions/requirements.txt)",
    "prometheus-client": "/metrics in `cdp serve` only (on Lambda the same names are EMF lines, powertools)",
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


def _input(name: str) -> list[Requirement]:
    if name.startswith("pyproject"):
        project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
        deps = list(project["dependencies"]) + (project["optional-dependencies"]["dev"] if name.endswith("dev") else [])
        return list(map(Requirement, deps))
    return [Requirement(line) for line in
            (raw.split("#", 1)[0].strip() for raw in (ROOT / name).read_text(encoding="utf-8").splitlines()) if line]


def _pins(lock: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a `uv pip compile --generate-hashes` output."""
    from packaging.utils import canonicalize_name

    pins: dict[str, tuple[str, list[str]]] = {}
    current = None
    for raw in lock.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip().rstrip("\\").strip()
        if not line:
            continue
        if line.startswith("--hash=sha256:"):
            assert current is not None, f"{lock}: a hash before any pin"
            pins[current][1].append(line)
            continue
        req = Requirement(line)
        spec = str(req.specifier)
        assert spec.startswith("==") and "," not in spec, f"{lock}: {line!r} is not an exact pin"
        current = canonicalize_name(req.name)
        pins[current] = (spec[2:], [])
    return pins


def test_every_lock_pins_its_inputs_with_hashes() -> None:
    from packaging.utils import canonicalize_name

    for lock_name, input_name in LOCKS.items():
        pins = _pins(ROOT / lock_name)
        assert pins, f"{lock_name} is empty"
        for name, (version, hashes) in pins.items():
            assert hashes, f"{lock_name}: {name}=={version} has no hash"
        for req in _input(input_name):
            if req.marker is not None and not req.marker.evaluate({"extra": "dev"}):
                continue
            name = canonicalize_name(req.name)
            assert name in pins, f"{lock_name} lacks {req.name} of {input_name}: run `make lock`"
            assert req.specifier.contains(pins[name][0], prereleases=True), \
                f"{lock_name}: {req.name}=={pins[name][0]} is outside {req} ({input_name}): run `make lock`"


def test_advisory_floors() -> None:
    from packaging.version import Version

    declared = _pyproject()
    for name, floor in ADVISORY_FLOORS.items():
        assert name in declared and any(
            s.operator in (">=", "==", "~=") and Version(s.version) >= Version(floor)
            for s in declared[name].specifier), f"pyproject.toml must require {name}>={floor}"
        for lock_name in LOCKS:
            pins = _pins(ROOT / lock_name)
            if name in pins:
                assert Version(pins[name][0]) >= Version(floor), f"{lock_name}: {name} below {floor}"


def test_installs_use_the_locks() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "--require-hashes -r requirements.lock" in makefile and "--no-deps -e ." in makefile
    layer = (ROOT / "layers" / "common" / "Makefile").read_text(encoding="utf-8")
    assert "--require-hashes --no-deps -r requirements.lock" in layer
    docker = (ROOT / "listener" / "Dockerfile").read_text(encoding="utf-8")
    assert "--require-hashes -r requirements.lock" in docker and "pip install --no-deps ." in docker
    image = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "COPY requirements-image.lock ./requirements.lock" in image
    assert "--require-hashes -r requirements.lock" in image and "pip install --no-deps ." in image
