"""The notebook's evidence: bootstrap intervals (classifiers.evaluate), the deployed tag heads' out-of-fold scores,
the learning curve's group subsets, garment families and unlabelled-tag counts (devtools.analysis)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from devtools import analysis as A
from classifiers.evaluate import bootstrap_intervals, evaluate
from classifiers.train import train
from embed.cache import read_cache
from test_classifiers import fake_spec, synthetic, write_cache


def frames(n: int, hit_rate: float, per_group: int, seed: int = 0, correlated: bool = False):
    rng = np.random.default_rng(seed)
    truth = rng.choice(["A", "B", "C"], n)
    groups = np.arange(n) // per_group
    hit = (rng.random(n // per_group) < hit_rate)[groups] if correlated else rng.random(n) < hit_rate
    labels = pd.DataFrame({"uuid": [f"u{i}" for i in range(n)], "cc3": truth, "group": [f"g{g}" for g in groups],
                           "floral": rng.integers(0, 2, n).astype(float)})
    predictions = pd.DataFrame({"uuid": labels["uuid"], "category1": np.where(hit, truth, "D"), "category2": "E",
                                "floral": np.where(hit, labels["floral"], 1 - labels["floral"]).astype(int)})
    return predictions, labels


def width(interval) -> float:
    return interval[1] - interval[0]


def test_intervals_hold_the_estimate_and_shrink_with_more_rows() -> None:
    small, large = frames(200, 0.8, 1), frames(3200, 0.8, 1)
    for predictions, labels in (small, large):
        point, ci = evaluate(predictions, labels, ["floral"]), bootstrap_intervals(predictions, labels, ["floral"])
        assert ci["category"]["top1"][0] <= point["category"]["top1"] <= ci["category"]["top1"][1]
        assert ci["tags"]["floral"]["f1"][0] <= point["tags"]["floral"]["f1"] <= ci["tags"]["floral"]["f1"][1]
        assert set(ci["tags_macro"]) == {"precision", "recall", "f1"}
    wide, narrow = (bootstrap_intervals(*data, ["floral"])["category"]["top1"] for data in (small, large))
    assert width(narrow) < 0.5 * width(wide)
    assert bootstrap_intervals(*small, ["floral"]) == bootstrap_intervals(*small, ["floral"])  # seeded


def test_whole_uploaders_are_resampled() -> None:
    # Hits shared by all photos of an uploader: resampling rows would pretend 10x more independent evidence.
    predictions, labels = frames(1000, 0.7, 10, correlated=True)
    by_group = bootstrap_intervals(predictions, labels, ["floral"])
    by_row = bootstrap_intervals(predictions, labels, ["floral"], by_group=False)
    assert by_group["unit"] == "group" and by_row["unit"] == "row"
    assert width(by_group["category"]["top1"]) > 2 * width(by_row["category"]["top1"])


def test_deployed_tag_oof_is_what_training_tuned_its_threshold_on(tmp_path) -> None:
    labels, vectors = synthetic(200)
    spec = dataclasses.replace(fake_spec(), parts=(("head", 4), ("mean3", 8), ("std3", 4)))
    cache = read_cache(write_cache(tmp_path / "cache", labels["uuid"], vectors, spec))
    model = train(labels, cache)
    oof = A.deployed_tag_oof(labels, cache)
    assert set(oof) == set(model.tags)
    for tag, (y, scores, threshold) in oof.items():
        assert len(y) == len(scores) == len(labels)
        assert threshold == pytest.approx(model.tags[tag].threshold)
        assert A.threshold_curve(y, scores, np.array([threshold]))["f1"][0] == pytest.approx(model.info["tags"][tag]["cv"]["f1"])


def test_group_subsets_keep_whole_groups() -> None:
    labels, _ = synthetic(100)  # 20 groups of 5
    subset = A.group_subsets(labels, 0.25, seed=0)
    assert subset["group"].nunique() == 5 and len(subset) == 25
    assert subset.groupby("group").size().eq(5).all()
    assert not A.group_subsets(labels, 0.25, seed=1).equals(subset)
    assert len(A.group_subsets(labels.drop(columns="group"), 0.5, seed=0)) == 50


def test_garment_family_and_unlabelled_tags() -> None:
    families = A.garment_family(pd.Series(["Polo", "Hoodie", None, "BLOUSES"]))
    assert families.tolist() == ["tops", "outerwear", "(no category label)", "BLOUSES"]
    labels = pd.DataFrame({"uuid": ["a", "b", "c"], "floral": [np.nan, 1.0, np.nan], "cc3": ["Shirt", None, "Dress"]})
    scored = pd.DataFrame({"uuid": ["c", "b", "a"], "floral": [1, 1, 0]})
    assert A.predicted_tags_without_labels(scored, labels, ["floral"])["uuid"].tolist() == ["c", "a"]
