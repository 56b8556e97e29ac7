"""Issue 9, point 6: every command line reports a user's mistake as one line on stderr and exit code 2.

Each case runs the command in a subprocess (what a user sees), with a private, empty VINTED_TAGGER_HOME.
"Not exported" hides PyTorch (a package that fails to import comes first on the path), so the encoder's ONNX
file can be neither found nor built: before issue 9, ``classify`` let that RuntimeError out as a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from embed.encoders import ENCODERS, get_encoder
from embed.pipeline import DEFAULT_ENCODER

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


# A table encoder whose ONNX graph does not ship: only the default encoder's does (make adopt changes which).
UNSHIPPED = next(name for name in ENCODERS if name != DEFAULT_ENCODER)


@pytest.fixture
def unshipped_model(tmp_path: Path) -> Path:
    """The committed model, its manifest naming an encoder whose graph is not in the package."""
    from vinted_tagger.settings import DEFAULT_MODEL_DIR

    folder = shutil.copytree(DEFAULT_MODEL_DIR, tmp_path / "model")
    manifest = json.loads((folder / "model.json").read_text())
    manifest["encoder"] = get_encoder(UNSHIPPED).to_dict()
    (folder / "model.json").write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize("command, args", [
    ("embed", ["a1.jpg", "--out", "cache", "--encoder", UNSHIPPED]),
    ("classify", ["predict", "--model", "model", "--images", "a1.jpg", "--out", "p.parquet"]),
    ("vinted-serve", ["--model", "model", "--port", "0"]),
])
def test_encoder_not_exported_is_one_line(tmp_path, image, unshipped_model, command, args) -> None:
    result = run(tmp_path, command, *args, hide_torch=True)
    assert_one_line(result, f"encoder {UNSHIPPED!r} is not built", "embed --export-only")


def test_damaged_export_is_one_line(tmp_path, image) -> None:
    folder = tmp_path / "home" / "encoders" / get_encoder(DEFAULT_ENCODER).slug  # what `embed` runs
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


# --- bad option values: one line naming the valid ones, not the usage block --------------------------


@pytest.mark.parametrize("command, args, fragments", [
    ("embed", ["a1.jpg", "--out", "cache", "--precision", "fp16"], ["invalid choice: 'fp16'", "'bf16'"]),
    ("classify", ["predict", "--images", "a1.jpg", "--out", "p.parquet", "--precision", "fp16"],
     ["invalid choice: 'fp16'", "'int8'"]),
    ("classify", ["predict", "--images", "a1.jpg", "--out", "p.parquet", "--runtime", "openvno"],
     ["invalid choice: 'openvno'", "'onnxruntime', 'openvino'"]),
    ("classify", ["train", "--data", "data.parquet", "--cache", "cache"], ["required: --out"]),
])
def test_bad_option_is_one_line(tmp_path, image, command, args, fragments) -> None:
    result = run(tmp_path, command, *args)
    assert_one_line(result, *fragments)
    assert "usage:" not in result.stderr and "-bf16" not in result.stderr  # runtimes, not variant names


# --- outputs that cannot be written, and inputs in the wrong format ----------------------------------


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_out_under_proc_says_why(tmp_path, image) -> None:
    (tmp_path / "cache").mkdir()
    result = run(tmp_path, "classify", "predict", "--cache", "cache", "--out", "/proc/p.parquet")
    assert_one_line(result, "/proc", "does not accept new files")
    result = run(tmp_path, "embed", "a1.jpg", "--out", "/proc/cache")  # a folder to create there
    assert_one_line(result, "cannot create cache folder /proc/cache", "does not accept new files")


def test_read_only_out_is_one_line_without_the_probe(tmp_path, monkeypatch, capsys) -> None:
    """On a read-only mount the probe's open fails with EROFS, and so does its clean-up (unlink)."""
    import errno

    from classifiers import cli as classify_cli
    from embed import output

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(args[0]))

    monkeypatch.setattr(output, "open", refuse, raising=False)
    monkeypatch.setattr(Path, "unlink", refuse)
    (tmp_path / "cache").mkdir()
    assert classify_cli.main(["predict", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "p.parquet")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the file system is read-only" in err[0] and "write-probe" not in err[0], err


@pytest.mark.parametrize("name, content, kind", [
    ("labels.csv", "uuid,cc3\na,X\n", "CSV"),
    ("labels.parquet", "uuid,cc3\na,X\n", "CSV"),  # a CSV under a Parquet name
    ("labels.json", '[{"uuid": "a"}]', "JSON"),
])
def test_labels_not_parquet_is_one_line(tmp_path, name, content, kind) -> None:
    (tmp_path / name).write_text(content)
    (tmp_path / "cache").mkdir()
    result = run(tmp_path, "classify", "train", "--data", name, "--cache", "cache", "--out", "model")
    assert_one_line(result, f"label file {name} must be Parquet (got {kind})")


@pytest.mark.parametrize("command, args", [
    ("embed", ["a1.jpg", "--out", "cache", "--ids", "ids.csv"]),
    ("classify", ["predict", "--images", "a1.jpg", "--out", "p.parquet", "--ids", "ids.csv"]),
])
def test_ids_not_parquet_is_one_line(tmp_path, image, command, args) -> None:
    (tmp_path / "ids.csv").write_text("uuid\na1\n")
    assert_one_line(run(tmp_path, command, *args), "ids file ids.csv must be Parquet (got CSV)")


# --- nothing the user did not name is replaced --------------------------------------------------------


def test_train_refuses_the_packaged_model_before_loading_anything(tmp_path) -> None:
    from classifiers.artifacts import DEFAULT_MODEL_DIR

    (tmp_path / "cache").mkdir()  # empty: reading it would fail, so the refusal must come first
    pd.DataFrame({"uuid": ["a"], "cc3": ["X"]}).to_parquet(tmp_path / "data.parquet")
    before = (DEFAULT_MODEL_DIR / "model.json").read_bytes()
    result = run(tmp_path, "classify", "train", "--data", "data.parquet", "--cache", "cache",
                 "--out", str(DEFAULT_MODEL_DIR))
    assert_one_line(result, "is the packaged default model", "--overwrite")
    assert (DEFAULT_MODEL_DIR / "model.json").read_bytes() == before


def test_finetune_without_pytorch_is_one_line(tmp_path) -> None:
    result = run(tmp_path, "finetune-encoder", "--data", "d.parquet", "--images", "x", "--out", "o", hide_torch=True)
    assert_one_line(result, "pip install 'vinted-tagger[train]'")
