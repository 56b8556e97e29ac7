"""Fine-tuning (classifiers.finetune) and the held-out calibration protocol of the heads.

The smoke run fine-tunes the real EfficientNet-Lite2 for one short epoch on a few dozen small images
(crops of scikit-image's astronaut), then resumes it for a second epoch, and exports the result to ONNX.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from embed.encoders import LITE2_WEIGHTS_PREFIX, get_encoder  # noqa: E402
from classifiers.finetune import Config, finetune, heldout_mask, multitask_loss  # noqa: E402

N_IMAGES = 40
CLASSES = ["Dress", "Pants", "Shoes"]


def test_null_labels_contribute_no_gradient():
    cat_logits = torch.randn(4, 3, requires_grad=True)
    tag_logits = torch.randn(4, 2, requires_grad=True)
    y_cat = torch.tensor([0, -1, 2, -1])  # rows 1 and 3: category unknown
    y_tag = torch.tensor([[float("nan"), float("nan")], [1.0, 0.0], [float("nan"), float("nan")], [0.0, float("nan")]])
    loss, parts = multitask_loss(cat_logits, tag_logits, y_cat, y_tag)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.all(cat_logits.grad[[1, 3]] == 0) and torch.all(cat_logits.grad[[0, 2]] != 0)
    assert torch.all(tag_logits.grad[[0, 2]] == 0) and tag_logits.grad[3, 1] == 0
    assert torch.all(tag_logits.grad[1] != 0) and tag_logits.grad[3, 0] != 0
    # Each task is the mean over its own labelled entries: 2 category rows, 3 tag entries.
    expected_tags = torch.nn.functional.binary_cross_entropy_with_logits(
        tag_logits[[1, 1, 3], [0, 1, 0]].detach(), torch.tensor([1.0, 0.0, 0.0]))
    assert parts["tags"] == pytest.approx(float(expected_tags), rel=1e-6)


def test_a_batch_without_labels_gives_zero_loss_and_gradient():
    cat_logits = torch.randn(2, 3, requires_grad=True)
    tag_logits = torch.randn(2, 1, requires_grad=True)
    loss, _ = multitask_loss(cat_logits, tag_logits, torch.tensor([-1, -1]), torch.full((2, 1), float("nan")))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(cat_logits.grad == 0) and torch.all(tag_logits.grad == 0)


def labels_frame(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    garments = rng.random(n) < 0.5  # half the rows label the category, the other half the tags
    frame = pd.DataFrame({"uuid": [f"img{i:04d}" for i in range(n)],
                          "cc3": [str(rng.choice(CLASSES)) if g else None for g in garments]})
    for tag in ("polka dot", "floral", "checker"):
        frame[tag] = np.where(garments, np.nan, (rng.random(n) < 0.3).astype(float))
    frame["group"] = [f"sender-{i // 6}" if g else f"dress-{i}" for i, g in enumerate(garments)]
    return frame


def test_heldout_groups_are_whole_stratified_and_seeded():
    frame = labels_frame()
    held = heldout_mask(frame)
    assert 0.10 < held.mean() < 0.20
    by_group = pd.Series(held).groupby(frame["group"]).agg(["min", "max"])
    assert (by_group["min"] == by_group["max"]).all()  # a group lies on one side only
    for name in CLASSES:  # every category is represented on the held-out side
        assert held[frame["cc3"] == name].any()
    assert np.array_equal(held, heldout_mask(frame)) and not np.array_equal(held, heldout_mask(frame, seed=1))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, picture, image_bytes) -> dict:
    """One short epoch on a few dozen images, then a resumed second epoch (both tiny)."""
    folder = tmp_path_factory.mktemp("finetune")
    frame = labels_frame(N_IMAGES, seed=3)
    frame.to_parquet(folder / "data.parquet")
    with zipfile.ZipFile(folder / "images.zip", "w") as archive:
        for i, uuid in enumerate(frame["uuid"]):
            archive.writestr(f"images/{uuid}.jpg", image_bytes(picture(i, (120, 90))))
    config = Config(freeze=5, epochs=1, batch_size=8, warmup_steps=2, patience=3)
    first = finetune(folder / "data.parquet", folder / "images.zip", folder / "run", config, progress=False, workers=0)
    first_curves = json.loads((folder / "run" / "curves.json").read_text())
    resumed = finetune(folder / "data.parquet", folder / "images.zip", folder / "run",
                       Config(**{**config.__dict__, "epochs": 2}), progress=False, workers=0)
    return {"folder": folder, "frame": frame, "first": first, "first_curves": first_curves, "resumed": resumed}


def test_smoke_run_writes_weights_curves_and_split(smoke):
    run = smoke["folder"] / "run"
    for name in ("encoder.safetensors", "heads.safetensors", "curves.json", "split.json", "checkpoint.pt"):
        assert (run / name).is_file(), name
    curves = smoke["first_curves"]
    assert curves["epochs_run"] == 1 and len(curves["curves"]) == 1
    row = curves["curves"][0]
    assert np.isfinite(row["train_loss"]) and 0 <= row["heldout_top1"] <= 1 and row["heldout_tag_f1"]
    assert smoke["first"]["encoder_bytes"] < 25e6 / 2  # fp16


def test_a_second_call_resumes_from_the_checkpoint(smoke):
    resumed = smoke["resumed"]
    assert resumed["epochs_run"] == 2
    assert resumed["curves"][0] == smoke["first_curves"]["curves"][0]  # epoch 1 was not run again


def test_no_heldout_uuid_was_used_for_fine_tuning(smoke):
    split = json.loads((smoke["folder"] / "run" / "split.json").read_text())
    checkpoint = torch.load(smoke["folder"] / "run" / "checkpoint.pt", map_location="cpu", weights_only=False)
    seen = set(checkpoint["state"]["seen"])  # every uuid that was in a training batch
    assert seen == set(split["train"])
    assert not seen & set(split["heldout"]) and split["heldout"]
    held = heldout_mask(smoke["frame"])
    assert set(split["heldout"]) == set(smoke["frame"]["uuid"][held])


def test_exported_onnx_of_the_adapted_weights_matches_pytorch(smoke, picture):
    from embed.export import LiteEmbedder, lite_classifier
    from embed.runtime import Encoder

    name = f"{LITE2_WEIGHTS_PREFIX}{smoke['folder'] / 'run' / 'encoder.safetensors'}"
    spec = get_encoder(name)
    encoder = Encoder.load(spec, threads=2, runtime="onnxruntime", precision="fp32")
    pixels = np.stack([encoder.pixels(picture(seed, (300, 260))) for seed in (1, 2)])
    onnx = encoder.encode(pixels)
    with torch.inference_mode():
        torch_out = LiteEmbedder(spec, lite_classifier(spec).eval())(torch.from_numpy(pixels)).numpy()
    assert np.abs(onnx - torch_out).max() < 1e-4
    frozen = Encoder.load("efficientnet-lite2", threads=2, runtime="onnxruntime", precision="fp32").encode(pixels)
    assert np.abs(onnx - frozen).max() > 1e-3  # the adapted weights are not ImageNet's
    assert encoder.spec.slug != get_encoder("efficientnet-lite2").slug


def test_a_missing_weight_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        get_encoder(f"{LITE2_WEIGHTS_PREFIX}{tmp_path / 'nothing.safetensors'}")


def test_the_cli_reports_a_missing_file_in_one_line(tmp_path, capsys):
    from classifiers.finetune import main

    assert main(["--data", str(tmp_path / "no.parquet"), "--images", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]


def test_heads_calibrate_on_held_out_rows(tmp_path):
    """Temperature and thresholds come from the held-out rows, which the heads never fit."""
    from classifiers.heads import best_f1_threshold
    from classifiers.train import train
    from tests.test_classifiers import synthetic, write_cache

    labels, vectors = synthetic(300)
    cache = write_cache(tmp_path / "cache", labels["uuid"], vectors)
    held = labels["uuid"][labels["group"].isin({f"sender-{i}" for i in range(0, 60, 4)})].tolist()
    model = train(labels, cache, calibrate_on=held)
    assert model.info["protocol"]["calibration"] == "held-out"
    assert model.info["protocol"]["heldout_rows"] == len(held)
    assert model.info["rows"]["labelled"] == len(labels) - len(held)
    rows = labels["uuid"].isin(set(held)).to_numpy()
    for name, head in model.tags.items():
        y = labels[name].to_numpy()[rows]
        expected = best_f1_threshold(y, head.proba(vectors[rows]))["threshold"]
        assert head.threshold == pytest.approx(expected)
    assert model.category.temperature == pytest.approx(model.info["category"]["heldout"]["temperature"])
    assert model.category.temperature != pytest.approx(model.info["category"]["cv"]["temperature"])
    with pytest.raises(ValueError, match="some but not all"):
        train(labels, cache, calibrate_on=["nobody"])


def test_freeze_decides_which_blocks_learn():
    from classifiers.finetune import build_model

    model = build_model(3, 2, freeze=4).train()
    maps = torch.randn(2, 120, 17, 17)  # the trunk's output (block 4) at 260 px
    cat_logits, tag_logits = model.forward_top(model.forward_frozen_tail(maps))
    (cat_logits.sum() + tag_logits.sum()).backward()
    assert cat_logits.shape == (2, 3) and tag_logits.shape == (2, 2)
    assert all(p.grad is not None for p in model.net.blocks[5].parameters())
    assert all(p.grad is None for p in model.net.blocks[4].parameters())
    assert not model.net.blocks[4].training and model.net.blocks[5].training  # frozen batch-norm statistics
    with pytest.raises(ValueError, match="freeze must be"):
        build_model(3, 2, freeze=2)
