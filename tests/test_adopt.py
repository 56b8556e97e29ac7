"""`make adopt` (training.adopt): refuses in one line, exit 2, unless bench/results/finetune.json adopted a
variant whose weight file is the one it scored; otherwise, on a copy of the files it changes, writes the fp16
weights, edits the table's checksum and the default encoder, and ships the graph and its int8 copy where
embed.runtime finds them with no torch. The repository's own files are never touched."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embed import runtime
from embed.encoders import ENCODERS, EncoderSpec, weight_path
from training.adopt import ADOPTED, main
from vinted_tagger.files import file_sha256

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = weight_path(ENCODERS[ADOPTED])


def results(tmp_path: Path, weights: Path, sha: str | None, adopted: bool = True) -> Path:
    """A finetune.json as bench/finetune_bench.py writes it, its candidate trained into ``weights``."""
    encoder = {"name": f"efficientnet-lite2:{weights}", "config": {}}
    if sha is not None:
        encoder["weights_sha256"] = sha
    record = {"adopted": adopted, "candidate": "blocks3-aug", "default_encoder": "blocks3-aug" if adopted else
              "imagenet-frozen", "variants": {"imagenet-frozen": {}, "blocks3-aug": {"encoder": encoder}}}
    path = tmp_path / "finetune.json"
    path.write_text(json.dumps(record))
    return path


def refused(args: list[str], capsys) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("adopt: error: ")
    return err


def test_nothing_is_adopted_when_the_bench_adopted_nothing(tmp_path, capsys) -> None:
    path = results(tmp_path, COMMITTED, file_sha256(COMMITTED), adopted=False)
    assert "adopted nothing" in refused(["--results", str(path), "--root", str(tmp_path)], capsys)


def test_weights_that_are_not_the_file_the_bench_scored_are_refused(tmp_path, capsys) -> None:
    weights = shutil.copyfile(COMMITTED, tmp_path / "encoder.safetensors")
    wrong = results(tmp_path, weights, "0" * 64)
    assert "not the file the bench adopted" in refused(["--results", str(wrong), "--root", str(tmp_path)], capsys)
    missing = results(tmp_path, tmp_path / "gone.safetensors", "0" * 64)
    assert "are missing" in refused(["--results", str(missing), "--root", str(tmp_path)], capsys)
    unrecorded = results(tmp_path, weights, None)
    assert "--sha256" in refused(["--results", str(unrecorded), "--root", str(tmp_path)], capsys)


def checkout_copy(folder: Path) -> Path:
    """The files adoption changes, copied; an old packaged graph folder to be replaced."""
    for name in ("embed/encoders.py", "embed/pipeline.py"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, folder / name)
    pipeline = folder / "embed" / "pipeline.py"  # the state before an adoption: ImageNet's the default
    pipeline.write_text(re.sub(r'(?m)^DEFAULT_ENCODER = ".*"$', 'DEFAULT_ENCODER = "efficientnet-lite2"',
                               pipeline.read_text()))
    old = folder / "artifacts" / "encoders" / "efficientnet-lite2-tf_efficientnet_lite2-old"
    old.mkdir(parents=True)
    (old / "spec.json").write_text("{}")
    return folder


def fine_tuned(path: Path) -> Path:
    """The committed fine-tuned weights, nudged (so their checksum is new) and saved as fp32."""
    from safetensors.torch import load_file, save_file

    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(COMMITTED)).items()}
    name = next(k for k, v in state.items() if v.is_floating_point() and v.ndim == 4)
    state[name] = state[name] * 1.01
    save_file(state, str(path))
    return path


def load_table(root: Path, monkeypatch):
    """The edited embed/encoders.py, run as a module of its own."""
    spec = importlib.util.spec_from_file_location("adopted_encoders", root / "embed" / "encoders.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")
def test_adoption_ships_the_weights_graph_and_int8_copy_and_makes_them_the_default(
        tmp_path, write_image, monkeypatch, capsys) -> None:
    pytest.importorskip("torch", reason="adoption exports the graph: pip install 'vinted-tagger[export]'")
    pytest.importorskip("onnx", reason="adoption calibrates the int8 copy: pip install 'vinted-tagger[export]'")
    from safetensors import safe_open

    untouched = {name: file_sha256(ROOT / name) for name in ("embed/encoders.py", "embed/pipeline.py")}
    root = checkout_copy(tmp_path / "checkout")
    (tmp_path / "run").mkdir()
    weights = fine_tuned(tmp_path / "run" / "encoder.safetensors")
    images = tmp_path / "images"
    for seed in range(5):
        write_image(images / f"u{seed}.jpg", seed, (200, 260))
    ids = tmp_path / "train.parquet"
    pd.DataFrame({"uuid": [f"u{seed}" for seed in range(4)]}).to_parquet(ids)  # u4 is not a training image
    path = results(tmp_path, weights, file_sha256(weights))
    assert main(["--results", str(path), "--root", str(root), "--images", str(images), "--ids", str(ids)]) == 0
    out = capsys.readouterr().out
    assert "make model" in out and 'DEFAULT_ENCODER = "efficientnet-lite2-clothing"' in out

    shipped = root / "artifacts" / "encoders" / COMMITTED.name
    with safe_open(str(shipped), "pt") as handle:
        assert {str(handle.get_tensor(k).dtype) for k in handle.keys() if handle.get_tensor(k).is_floating_point()} \
            == {"torch.float16"}
    table = load_table(root, monkeypatch)
    spec = EncoderSpec.from_dict(table.ENCODERS[ADOPTED].to_dict())  # as the product's own class
    assert spec.sha256 == file_sha256(shipped) != ENCODERS[ADOPTED].sha256
    assert 'DEFAULT_ENCODER = "efficientnet-lite2-clothing"' in (root / "embed" / "pipeline.py").read_text()
    folders = [p.name for p in (root / "artifacts" / "encoders").iterdir() if p.is_dir()]
    assert folders == [spec.slug]  # the old graph folder is gone
    assert json.loads((root / "artifacts" / "encoders" / spec.slug / "spec.json").read_text())["spec"]["weights"] \
        == spec.weights  # as the table names it, no temporary path

    # a plain install finds and runs the packaged graph and its int8 copy: empty home, no torch
    monkeypatch.setenv("VINTED_TAGGER_HOME", str(tmp_path / "empty-home"))
    for name in ("torch", "timm", "open_clip", "embed.export"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setattr(runtime, "PACKAGE_DATA", root)
    assert runtime.graph_dir(spec) == runtime.packaged_dir(spec) == root / "artifacts" / "encoders" / spec.slug
    for precision in ("fp32", "int8"):
        encoder = runtime.Encoder.load(spec, threads=1, runtime="onnxruntime", precision=precision, export=False)
        vectors, errors = encoder.embed_images([(images / "u4.jpg").read_bytes()])
        assert errors == [None] and np.isfinite(vectors).all() and vectors.shape == (1, spec.dim)
    assert {name: file_sha256(ROOT / name) for name in untouched} == untouched
