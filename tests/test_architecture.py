"""Issue 9, point 8: the layering is checked by a tool, not by memory.

``lint-imports`` (import-linter, the dev extra) checks the contracts of pyproject.toml's [tool.importlinter]:
service > classifiers > embed > vinted_tagger, each importing only the layers below it (imports inside
functions count too), and the product never importing the development package devtools.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")  # installed beside this interpreter (venv)


def lint_imports(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
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
