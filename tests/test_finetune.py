"""Encoder fine-tuning (the training package) and the held-out calibration protocol of the heads.

The smoke run fine-tunes the real EfficientNet-Lite2 for one tiny epoch on demo images (devtools.demo_data),
resumes it for a second, skips it once finished, and exports the result to ONNX through the product's exporter.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from embed.encoders import LITE2_WEIGHTS_PREFIX, get_encoder  # noqa: E402
from training.labels import heldout_mask  # noqa: E402
from training.model import multitask_loss  # noqa: E402
from training.config import Config  # noqa: E402

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


# --- augmentation ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    from devtools.demo_data import make_demo_dataset

    folder = tmp_path_factory.mktemp("demo")
    make_demo_dataset(folder, n_train=48, n_test=4, seed=0)
    return {"folder": folder, "data": folder / "data.parquet", "images": folder / "data.zip"}


def photos(demo, augment: bool, seed: int = 0):
    from training.data import Photos, read_blobs

    labels = pd.read_parquet(demo["data"])
    uuids = labels["uuid"].tolist()
    return Photos(read_blobs(demo["images"], set(uuids)), uuids, np.arange(8), 260, augment, seed=seed)


def first_batch(dataset, workers: int = 0):
    from training.data import loader

    pixels, rows = next(iter(loader(dataset, 8, workers)))
    return pixels, rows


def test_augmented_views_have_the_encoder_input_shape_and_range(demo):
    pixels, rows = first_batch(photos(demo, augment=True))
    plain, _ = first_batch(photos(demo, augment=False))
    assert pixels.shape == plain.shape == (8, 260, 260, 3) and pixels.dtype == plain.dtype == torch.uint8
    assert rows.tolist() == list(range(8))
    assert 0 <= int(pixels.min()) and int(pixels.max()) <= 255 and pixels.float().std() > 10  # a photo, not flat
    assert (pixels.float() - plain.float()).abs().mean() > 5  # the views are not the centre crop


def test_the_same_seed_gives_the_same_batch_whatever_the_workers(demo):
    dataset = photos(demo, augment=True, seed=3)
    first, _ = first_batch(dataset)
    again, _ = first_batch(photos(demo, augment=True, seed=3), workers=1)
    assert torch.equal(first, again)
    dataset.epoch = 1  # another epoch, other views
    assert not torch.equal(first, first_batch(dataset)[0])
    assert not torch.equal(first, first_batch(photos(demo, augment=True, seed=4))[0])


def test_augmentation_leaves_the_global_random_state_alone(demo):
    dataset = photos(demo, augment=True)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    dataset[0]
    assert torch.equal(torch.rand(3), expected)


# --- recipe ---------------------------------------------------------------------------------------------


def test_freeze_decides_which_blocks_learn_and_lower_blocks_learn_slower():
    from training.model import build_model
    from training.recipe import param_groups

    model = build_model(3, 2, freeze=4).train()
    cat_logits, tag_logits = model(torch.randint(0, 255, (2, 260, 260, 3), dtype=torch.uint8))
    (cat_logits.sum() + tag_logits.sum()).backward()
    assert cat_logits.shape == (2, 3) and tag_logits.shape == (2, 2)
    assert all(p.grad is not None for p in model.net.blocks[5].parameters())
    assert all(p.grad is None for p in model.net.blocks[4].parameters())
    assert not model.net.blocks[4].training and model.net.blocks[5].training  # frozen batch-norm statistics
    groups = param_groups(model, Config(freeze=4))
    assert [g["name"] for g in groups] == ["heads", "level0", "level1"]  # heads, block 6 + head conv, block 5
    assert groups[0]["lr"] > groups[1]["lr"] > groups[2]["lr"]
    whole = param_groups(build_model(3, 2, freeze=-1), Config(freeze=-1))
    assert len(whole) == 1 + 8  # heads, then blocks 6..0 and the stem
    with pytest.raises(ValueError, match="freeze must be"):
        build_model(3, 2, freeze=-2)


def test_lp_ft_probe_trains_only_the_heads():
    from training.model import build_model

    model = build_model(3, 2, freeze=-1)
    model.probing = True
    model.train()
    cat_logits, tag_logits = model(torch.randint(0, 255, (2, 260, 260, 3), dtype=torch.uint8))
    (cat_logits.sum() + tag_logits.sum()).backward()
    assert model.category.weight.grad is not None
    assert all(p.grad is None for p in model.net.parameters()) and not model.net.training


def test_schedule_warms_up_then_decays_to_zero_and_waits_for_the_probe():
    from training.recipe import warmup_cosine

    assert warmup_cosine(0, 0, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine(9, 0, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(100, 0, 10, 100) == pytest.approx(0.0)
    assert warmup_cosine(5, 20, 10, 100) == 0.0 and warmup_cosine(20, 20, 10, 100) == pytest.approx(0.1)


def test_wise_ft_interpolates_weights_and_chooses_the_middle_on_ties():
    from training.robust import choose_alpha, interpolate

    base = {"w": torch.zeros(3), "n": torch.tensor(0)}
    tuned = {"w": torch.ones(3, dtype=torch.float16), "n": torch.tensor(7)}
    assert torch.equal(interpolate(base, tuned, 0.0)["w"], torch.zeros(3))
    assert torch.allclose(interpolate(base, tuned, 0.25)["w"], torch.full((3,), 0.25))
    assert int(interpolate(base, tuned, 0.5)["n"]) == 7
    with pytest.raises(ValueError, match="alpha"):
        interpolate(base, tuned, 1.5)
    assert choose_alpha({0.25: 1.60, 0.5: 1.70, 0.75: 1.65, 1.0: 1.62}) == 0.5
    assert choose_alpha({0.25: 1.70, 0.5: 1.70, 0.75: 1.70, 1.0: 1.60}) == 0.5  # three tie: the middle
    assert choose_alpha({0.25: 1.60, 0.5: 1.60, 0.75: 1.70, 1.0: 1.70}) == 0.75  # two tie: the one nearer 0.5


# --- the smoke run --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke(demo, tmp_path_factory) -> dict:
    """One tiny epoch on demo images, then a resumed second epoch, then a call that finds it finished."""
    from training.loop import finetune

    out = tmp_path_factory.mktemp("finetune") / "run"
    config = Config(freeze=4, epochs=1, batch_size=8, warmup_steps=2, limit=16)
    first = finetune(demo["data"], demo["images"], out, config, progress=False, workers=0)
    first_curves = json.loads((out / "curves.json").read_text())
    resumed = finetune(demo["data"], demo["images"], out, Config(**{**config.__dict__, "epochs": 2}),
                       progress=False, workers=0)
    checkpoint_time = (out / "checkpoint.pt").stat().st_mtime
    again = finetune(demo["data"], demo["images"], out, Config(**{**config.__dict__, "epochs": 2}),
                     progress=False, workers=0)
    return {"out": out, "demo": demo, "first": first, "first_curves": first_curves, "resumed": resumed,
            "again": again, "checkpoint_time": checkpoint_time}


def test_smoke_run_writes_weights_curves_and_split(smoke):
    out = smoke["out"]
    for name in ("encoder.safetensors", "heads.safetensors", "curves.json", "split.json", "checkpoint.pt"):
        assert (out / name).is_file(), name
    curves = smoke["first_curves"]
    assert curves["epochs_run"] == 1 and len(curves["curves"]) == 1 and curves["finished"]
    row = curves["curves"][0]
    assert np.isfinite(row["train_loss"]) and 0 <= row["heldout_top1"] <= 1 and row["heldout_tag_f1"]
    assert (out / "encoder.safetensors").stat().st_size < 25e6 / 2  # fp16


def test_a_second_call_resumes_and_a_finished_run_is_skipped(smoke):
    resumed = smoke["resumed"]
    assert resumed["epochs_run"] == 2 and resumed["finished"]
    assert resumed["curves"][0] == smoke["first_curves"]["curves"][0]  # epoch 1 was not run again
    assert smoke["again"]["curves"] == resumed["curves"]
    assert (smoke["out"] / "checkpoint.pt").stat().st_mtime == smoke["checkpoint_time"]  # nothing retrained


def test_a_checkpoint_of_another_recipe_is_refused(smoke):
    from training.loop import finetune

    demo = smoke["demo"]
    with pytest.raises(ValueError, match="another configuration"):
        finetune(demo["data"], demo["images"], smoke["out"], Config(freeze=3, epochs=3, batch_size=8, limit=16),
                 progress=False, workers=0)


def test_no_heldout_uuid_was_used_for_fine_tuning(smoke):
    split = json.loads((smoke["out"] / "split.json").read_text())
    checkpoint = torch.load(smoke["out"] / "checkpoint.pt", map_location="cpu", weights_only=False)
    seen = set(checkpoint["state"]["seen"])  # every uuid that was in a training batch
    assert seen == set(split["train"])
    assert not seen & set(split["heldout"]) and split["heldout"]
    frame = pd.read_parquet(smoke["demo"]["data"])
    assert set(split["heldout"]) == set(frame["uuid"][heldout_mask(frame)])


def test_exported_onnx_of_the_adapted_weights_matches_pytorch(smoke, picture):
    from embed.export import LiteEmbedder, lite_classifier
    from embed.runtime import Encoder
    from training.weights import load_finetuned

    name = f"{LITE2_WEIGHTS_PREFIX}{smoke['out'] / 'encoder.safetensors'}"
    spec = get_encoder(name)
    encoder = Encoder.load(spec, threads=2, runtime="onnxruntime", precision="fp32")
    pixels = np.stack([encoder.pixels(picture(seed, (300, 260))) for seed in (1, 2)])
    onnx = encoder.encode(pixels)
    embedder = LiteEmbedder(spec, lite_classifier(spec).eval())
    with torch.inference_mode():
        torch_out = embedder(torch.from_numpy(pixels)).numpy()
        head = embedder.features(torch.from_numpy(pixels))["head"]
        trained = load_finetuned(smoke["out"]).features(torch.from_numpy(pixels))
    assert np.abs(onnx - torch_out).max() < 1e-4
    assert torch.allclose(head, trained, atol=1e-4)  # the exported network is the one that was trained
    frozen = Encoder.load("efficientnet-lite2", threads=2, runtime="onnxruntime", precision="fp32").encode(pixels)
    assert np.abs(onnx - frozen).max() > 1e-3  # the adapted weights are not ImageNet's
    assert encoder.spec.slug != get_encoder("efficientnet-lite2").slug


def test_a_missing_weight_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        get_encoder(f"{LITE2_WEIGHTS_PREFIX}{tmp_path / 'nothing.safetensors'}")


def test_the_cli_reports_a_missing_file_in_one_line(tmp_path, capsys):
    from training.cli import main

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


def test_adoption_rule_is_decided_on_the_heldout_groups_only():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from finetune_bench import adoption

    frozen = {"heldout_top1": 0.82, "heldout_macro_tag_f1": 0.80, "heldout_worn_macro_tag_f1": 0.80, "test_top1": 0.8}
    good = {"heldout_top1": 0.845, "heldout_macro_tag_f1": 0.796, "heldout_worn_macro_tag_f1": 0.796, "test_top1": 0.7}
    better_on_test = {**good, "heldout_top1": 0.83, "test_top1": 0.95}
    assert adoption({"imagenet-frozen": frozen, "a": good, "b": better_on_test}) == ("a", True)
    assert adoption({"imagenet-frozen": frozen, "a": {**good, "heldout_top1": 0.835}}) == ("a", False)
    assert adoption({"imagenet-frozen": frozen, "a": {**good, "heldout_macro_tag_f1": 0.79}}) == ("a", False)
    assert adoption({"imagenet-frozen": frozen, "a": {**good, "heldout_worn_macro_tag_f1": 0.79}}) == ("a", False)
