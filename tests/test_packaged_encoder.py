"""The default encoder's graph ships in the package (artifacts/encoders/<slug>/: the fp32 export and its int8
copy): with an empty VINTED_TAGGER_HOME and no PyTorch side, as after a plain `pip install .`, the packaged
model predicts, int8 is among what ``auto`` may run, nothing is written into the package, and a packaged file
that fails its recorded checksum is refused."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from classifiers.predict import RAN_KEY
from embed import runtime
from embed.encoders import EncoderError, EncoderSpec, get_encoder, identity
from embed.pipeline import DEFAULT_ENCODER
from embed.quantize import CALIBRATION_IMAGES, CALIBRATION_SEED
from vinted_tagger.settings import DEFAULT_MODEL_DIR

SHIPPED = sorted(runtime.GRAPH_FILES + runtime.INT8_FILES)


def model_encoder() -> EncoderSpec:
    """The encoder the committed default model was trained on: the one whose graph ships."""
    return EncoderSpec.from_dict(json.loads((DEFAULT_MODEL_DIR / "model.json").read_text())["encoder"])


@pytest.fixture
def plain_install(tmp_path, monkeypatch) -> Path:
    """An empty VINTED_TAGGER_HOME and a PyTorch side that cannot be imported: what a plain install has."""
    home = tmp_path / "home"
    monkeypatch.setenv("VINTED_TAGGER_HOME", str(home))
    for name in ("torch", "timm", "open_clip", "embed.export"):
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError
    return home


def test_the_package_ships_the_default_models_encoder_graph_and_its_reproducible_int8() -> None:
    model_spec = model_encoder()
    folder = runtime.packaged_dir(model_spec)
    assert sorted(p.name for p in folder.iterdir()) == SHIPPED
    # one graph ships (the default model's), and the model was trained on the product's default encoder
    assert [p.name for p in folder.parent.iterdir() if p.is_dir()] == [folder.name]
    assert identity(get_encoder(DEFAULT_ENCODER)) == identity(model_spec), "after `make adopt`, run `make model`"
    graph = json.loads((folder / "spec.json").read_text())
    int8 = json.loads((folder / runtime.INT8_RECORD).read_text())
    assert EncoderSpec.from_dict(graph["spec"]).slug == model_spec.slug == folder.name
    assert int8["fp32_sha256"] == graph["onnx_sha256"]
    # what `make calibrate` writes: the seeded sample of the stand-in train split (byte for byte the same file)
    assert (int8["calibration"]["images"], int8["calibration"]["seed"]) == (CALIBRATION_IMAGES, CALIBRATION_SEED)


def test_a_plain_install_predicts_with_the_packaged_graph_and_may_run_its_int8(plain_install, write_image,
                                                                              tmp_path, monkeypatch, capsys):
    from classifiers.cli import main

    offered = []

    def time_variants(spec, path, variants, batch):  # as if int8 measured fastest here
        offered.extend(v.name for v in variants)
        return {v.name: 9.0 if v.precision == "int8" else 1.0 for v in variants}

    monkeypatch.setattr(runtime, "time_variants", time_variants)
    spec = model_encoder()
    before = {p.name: p.stat().st_mtime_ns for p in runtime.packaged_dir(spec).iterdir()}
    image = write_image(tmp_path / "photo.jpg", 3, (200, 260))
    out = tmp_path / "p.parquet"
    assert main(["predict", "--images", str(image), "--out", str(out)]) == 0
    assert len(pq.read_table(out)) == 1
    ran = json.loads(pq.read_schema(out).metadata[RAN_KEY])["ran"][0]
    assert "onnxruntime-int8" in offered and ran["variant"] in offered and ran["variant"].endswith("int8")
    # the timings land in the user's home; the package is only read; nothing was exported
    assert (plain_install / "variant-speed.json").exists() and not (plain_install / "encoders").exists()
    assert {p.name: p.stat().st_mtime_ns for p in runtime.packaged_dir(spec).iterdir()} == before
    assert "ran " + ran["variant"] in capsys.readouterr().err


@pytest.mark.parametrize("name", ["model.onnx", runtime.INT8_FILE])
def test_a_tampered_packaged_file_is_refused_by_its_checksum(name, plain_install, tmp_path, monkeypatch) -> None:
    spec = model_encoder()
    copy = shutil.copytree(runtime.packaged_dir(spec), tmp_path / "package")
    data = bytearray((copy / name).read_bytes())
    data[-1] ^= 1
    (copy / name).write_bytes(data)
    monkeypatch.setattr(runtime, "packaged_dir", lambda spec: copy)
    with pytest.raises(EncoderError, match="reinstall vinted-tagger"):
        path, _ = runtime.ensure_onnx(spec, export=False)
        runtime.int8_graph(spec, path)
