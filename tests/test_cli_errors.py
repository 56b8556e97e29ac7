"""Issue 9, point 6: every command line reports a user's mistake as one line on stderr and exit code 2.

Each case runs the command in a subprocess (what a user sees), with a private, empty VINTED_TAGGER_HOME.
"Not exported" hides PyTorch (a package that fails to import comes first on the path), so the encoder's ONNX
file can be neither found nor built: before issue 9, ``classify`` let that RuntimeError out as a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from embed.encoders import get_encoder

ROOT = Path(__file__).resolve().parents[1]
# The console scripts (pyproject [project.scripts]) and what they run.
COMMANDS = {
    "embed": ["-m", "embed.cli"],
    "classify": ["-m", "classifiers.cli"],
    "finetune-encoder": ["-m", "training"],
    "vinted-serve": ["-m", "service"],
}


def run(tmp_path: Path, command: str, *args: str, env: dict | None = None, hide_torch: bool = False):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    path = [str(ROOT)]
    if hide_torch:
        fake = tmp_path / "no-torch" / "torch"
        fake.mkdir(parents=True, exist_ok=True)
        (fake / "__init__.py").write_text('raise ImportError("PyTorch is hidden by the test")\n')
        path.insert(0, str(fake.parent))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VINTED_TAGGER_")}
    environ = {**clean, "VINTED_TAGGER_HOME": str(home), "PYTHONPATH": os.pathsep.join(path), **(env or {})}
    return subprocess.run([sys.executable, *COMMANDS[command], *args], cwd=tmp_path, env=environ,
                          capture_output=True, text=True, timeout=120)


def assert_one_line(result, *fragments: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def image(tmp_path: Path, write_image) -> Path:
    return write_image(tmp_path / "a1.jpg")


@pytest.fixture
def bad_model(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.json").write_text('{"format_version": "not a model"')
    return folder


# --- missing files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("command, args, fragment", [
    ("embed", ["missing.zip", "--out", "cache"], "image source not found: missing.zip"),
    ("classify", ["evaluate", "--predictions", "p.parquet", "--labels", "l.parquet"], "p.parquet does not exist"),
    ("classify", ["train", "--data", "data.parquet", "--cache", "cache", "--out", "m"], "data.parquet"),
    ("classify", ["predict", "--cache", "cache", "--out", "p.parquet"], "cache folder cache does not exist"),
    ("finetune-encoder", ["--data", "data.parquet", "--images", "x.zip", "--out", "run"], "data.parquet does not exist"),
    ("vinted-serve", ["--model", "no-model", "--port", "0"], "no model at no-model"),
])
def test_missing_file_is_one_line(tmp_path, command, args, fragment) -> None:
    assert_one_line(run(tmp_path, command, *args), fragment)


# --- unknown names -----------------------------------------------------------------------------------


def test_unknown_encoder_lists_the_valid_names(tmp_path) -> None:
    result = run(tmp_path, "embed", "--export-only", "--encoder", "no-such-encoder")
    assert_one_line(result, "unknown encoder 'no-such-encoder'", "valid encoders: efficientnet-lite2")


# --- bad cache or model ------------------------------------------------------------------------------


def test_bad_cache_is_one_line(tmp_path) -> None:
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "_manifest.json").write_text("not json")
    result = run(tmp_path, "classify", "predict", "--cache", "cache", "--out", "p.parquet")
    assert_one_line(result, "cache/_manifest.json is damaged")


@pytest.mark.parametrize("command, args", [
    ("classify", ["predict", "--model", "model", "--cache", "cache", "--out", "p.parquet"]),
    ("vinted-serve", ["--model", "model", "--port", "0"]),
])
def test_bad_model_is_one_line(tmp_path, bad_model, command, args) -> None:
    (tmp_path / "cache").mkdir()
    assert_one_line(run(tmp_path, command, *args), "model/model.json: not readable JSON")


# --- encoder not exported, or damaged ----------------------------------------------------------------


@pytest.mark.parametrize("command, args", [
    ("embed", ["a1.jpg", "--out", "cache"]),
    ("classify", ["predict", "--images", "a1.jpg", "--out", "p.parquet"]),  # the committed model's encoder
    ("vinted-serve", ["--port", "0"]),
])
def test_encoder_not_exported_is_one_line(tmp_path, image, command, args) -> None:
    result = run(tmp_path, command, *args, hide_torch=True)
    assert_one_line(result, "encoder 'efficientnet-lite2' is not built", "embed --export-only")


def test_damaged_export_is_one_line(tmp_path, image) -> None:
    folder = tmp_path / "home" / "encoders" / get_encoder("efficientnet-lite2").slug
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"half an onnx file")
    (folder / "spec.json").write_text(json.dumps({"spec": {}, "onnx_sha256": "0" * 64}))
    assert_one_line(run(tmp_path, "embed", "a1.jpg", "--out", "cache"), "does not match its recorded checksum")


# --- bad setting values ------------------------------------------------------------------------------


@pytest.mark.parametrize("variable, value, fragment", [
    ("VINTED_TAGGER_MAX_FILES", "many", "VINTED_TAGGER_MAX_FILES='many' is not a valid int"),
    ("VINTED_TAGGER_BATCH_WINDOW_MS", "soon", "VINTED_TAGGER_BATCH_WINDOW_MS='soon' is not a valid float"),
    ("VINTED_TAGGER_MAX_FILE_MB", "0", "settings out of range"),
])
def test_bad_setting_is_one_line(tmp_path, variable, value, fragment) -> None:
    # The committed model loads first; the bad value stops the service before it listens.
    assert_one_line(run(tmp_path, "vinted-serve", "--port", "0", env={variable: value}), fragment)


def test_finetune_without_pytorch_is_one_line(tmp_path) -> None:
    result = run(tmp_path, "finetune-encoder", "--data", "d.parquet", "--images", "x", "--out", "o", hide_torch=True)
    assert_one_line(result, "pip install 'vinted-tagger[train]'")
