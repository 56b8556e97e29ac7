"""devtools/ is development-only: never installed with the product, never imported by it."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("embed", "classifiers", "service")


def test_devtools_is_not_packaged() -> None:
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = find_packages(str(ROOT), include=find["include"], exclude=find.get("exclude", ()))
    assert {"embed", "classifiers", "service"} <= set(packages)
    assert not [p for p in packages if p.split(".")[0] in ("devtools", "notebook", "bench", "tests")]


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module)
    return modules


def test_the_product_never_imports_devtools() -> None:
    offenders = [f"{path.relative_to(ROOT)}: {module}" for folder in PRODUCT for path in sorted((ROOT / folder).rglob("*.py"))
                 for module in imported_modules(path) if module.split(".")[0] == "devtools"]
    assert not offenders, offenders
    # The development modules that moved out of the product are not left behind in it.
    for gone in ("embed/demo_data.py", "embed/inspect.py", "classifiers/analysis.py", "notebook/helpers.py",
                 "embed/finetune.py", "classifiers/finetune.py"):
        assert not (ROOT / gone).exists(), gone
