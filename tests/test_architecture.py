"""Issue 9, point 8: the layering is checked by a tool, not by memory.

``lint-imports`` (import-linter, the dev extra) checks the contracts of pyproject.toml's [tool.importlinter]:
service > classifiers > embed > vinted_tagger, each importing only the layers below it (imports inside
functions count too), the product never importing the development package devtools, no import cycle inside a
product package, the embedding engines independent of each other, and no torch outside embed.export.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")  # installed beside this interpreter (venv)


def lint_imports(*args: str, pythonpath: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(pythonpath), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_import_contracts_hold() -> None:
    result = lint_imports()
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "BROKEN" not in result.stdout


def test_the_checker_finds_a_broken_layer(tmp_path) -> None:
    """The same tool on a contract the code breaks (embed imports vinted_tagger: upside down) fails."""
    config = tmp_path / "upside-down.toml"
    config.write_text('[tool.importlinter]\nroot_packages = ["embed", "vinted_tagger"]\n\n'
                      '[[tool.importlinter.contracts]]\nname = "upside down"\ntype = "layers"\n'
                      'layers = ["vinted_tagger", "embed"]\n')
    result = lint_imports("--config", str(config))
    assert result.returncode == 1, result.stdout[-4000:] + result.stderr[-2000:]
    assert "embed is not allowed to import vinted_tagger" in result.stdout


def test_the_checker_finds_an_import_cycle(tmp_path) -> None:
    """Two sibling modules that import each other (what embed.pipeline and the Ray engine once did) fail the
    acyclic contract."""
    package = tmp_path / "tangled"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "driver.py").write_text("from tangled import engine\n")
    (package / "engine.py").write_text("def run():\n    from tangled.driver import summary\n")
    config = tmp_path / "cycle.toml"
    config.write_text('[tool.importlinter]\nroot_packages = ["tangled"]\n\n'
                      '[[tool.importlinter.contracts]]\nname = "no cycle"\ntype = "acyclic_siblings"\n'
                      'ancestors = ["tangled"]\n')
    result = lint_imports("--config", str(config), pythonpath=tmp_path)
    assert result.returncode == 1, result.stdout[-4000:] + result.stderr[-2000:]
    assert "no cycle BROKEN" in result.stdout


def test_the_checker_finds_torch_outside_the_export(tmp_path) -> None:
    """The no-torch contract without its exception for embed.export fails on that module's own import."""
    config = tmp_path / "no-torch.toml"
    config.write_text('[tool.importlinter]\nroot_packages = ["embed", "vinted_tagger"]\n'
                      'include_external_packages = true\n\n'
                      '[[tool.importlinter.contracts]]\nname = "no torch"\ntype = "forbidden"\n'
                      'source_modules = ["embed"]\nforbidden_modules = ["torch"]\n')
    result = lint_imports("--config", str(config))
    assert result.returncode == 1, result.stdout[-4000:] + result.stderr[-2000:]
    assert "embed.export -> torch" in result.stdout
