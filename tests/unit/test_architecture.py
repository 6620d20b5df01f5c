"""The package's shape: the rings' import contracts (pyproject's [tool.importlinter], run with
`lint-imports`), no import cycles between modules, no private names imported across modules.

Each check reads the tree this file lives in (layers/common), whatever cdp is installed.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "layers" / "common"
# Code that imports cdp: the package, the Lambda shims, the listener image's entry point.
CODE = [SRC / "cdp", ROOT / "functions", ROOT / "listener"]


def _with_src_first() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), *([path] if path else [])])}


def test_import_contracts() -> None:
    proc = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()",
                           "--no-cache"], cwd=ROOT, env=_with_src_first(), capture_output=True, text=True,
                          timeout=60)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        report = out[out.find("Broken contracts"):] if "Broken contracts" in out else out
        pytest.fail(f"import contracts broken (pyproject.toml [tool.importlinter]):\n{report}", pytrace=False)


_CYCLES = """
import grimp
graph = grimp.build_graph("cdp", exclude_type_checking_imports=True, cache_dir=None)
done = set()
for module in sorted(graph.modules):
    if module in done:
        continue
    cycle = {module} | {m for m in graph.find_upstream_modules(module)
                        if graph.chain_exists(importer=m, imported=module)}
    done |= cycle
    if len(cycle) > 1:
        print("cycle: " + ", ".join(sorted(cycle)))
        for importer in sorted(cycle):
            for imported in sorted(graph.find_modules_directly_imported_by(importer) & cycle):
                lines = sorted(d["line_number"] for d in graph.get_import_details(importer=importer,
                                                                                  imported=imported))
                print(f"  {importer} -> {imported} (l.{', l.'.join(map(str, lines))})")
"""


def test_no_import_cycles() -> None:
    """Between modules of cdp, at run time: `if TYPE_CHECKING:` back-references are not cycles."""
    proc = subprocess.run([sys.executable, "-c", _CYCLES], env=_with_src_first(), capture_output=True,
                          text=True, timeout=60, check=True)
    if proc.stdout:
        pytest.fail(f"import cycles between modules of cdp:\n{proc.stdout}", pytrace=False)


def _private_imports(path: Path, source: str) -> list[str]:
    """`from cdp... import _x` statements in `source` (the text of `path`), wherever they stand."""
    package = path.relative_to(SRC).parent.parts if path.is_relative_to(SRC) else ()
    found = []
    for node in ast.walk(ast.parse(source, str(path))):
        if not isinstance(node, ast.ImportFrom):
            continue
        module = node.module or ""
        if node.level:  # relative: resolve against the file's package
            module = ".".join([*package[:len(package) - node.level + 1], *([module] if module else [])])
        if module.split(".")[0] != "cdp":
            continue
        found += [f"{path.relative_to(ROOT)}:{node.lineno}: from {module} import {alias.name}"
                  for alias in node.names if alias.name.startswith("_") and not alias.name.endswith("__")]
    return found


def test_no_private_names_imported_across_modules() -> None:
    found = [hit for top in CODE for path in sorted(top.rglob("*.py"))
             for hit in _private_imports(path, path.read_text(encoding="utf-8"))]
    if found:
        pytest.fail("private names imported across modules:\n" + "\n".join(found), pytrace=False)


def test_private_import_check_sees_relative_and_lazy_imports() -> None:
    source = "def f():\n    from ..aws.runtime import _state\n    from cdp.domain import (\n        ok, _hidden)\n"
    hits = _private_imports(SRC / "cdp" / "entry" / "api" / "probe.py", source)
    assert [h.split(": ", 1)[1] for h in hits] == ["from cdp.entry.aws.runtime import _state",
                                                   "from cdp.domain import _hidden"]
