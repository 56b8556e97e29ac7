"""Tests for the notebook's analysis helpers (devtools/analysis.py) and image statistics (devtools/image_stats.py)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from classifiers.metrics import top_k_accuracy
from devtools import analysis as A
from devtools import image_stats as I
from embed.encoders import get_encoder


@pytest.fixture()
def labels() -> pd.DataFrame:
    return pd.DataFrame({
        "uuid": list("abcdef"),
        "cc3": ["X", "X", "X", "Y", None, "Y"],
        "color1": ["RED", "RED", "BLUE", "BLUE", "RED", None],
        "polka dot": [1, 0, 0, 0, np.nan, 1],
        "floral": [0, 1, 0, 0, np.nan, 1],
        "checker": [0, 0, 0, 0, np.nan, 0],
        "group": ["g1", "g1", "g2", "g3", "g3", "g4"],
        "source": ["s", "s", "s", "s", "t", "t"],
    })


def test_label_tables_ignore_nulls(labels: pd.DataFrame) -> None:
    balance = A.category_balance(labels)
    assert balance["count"].to_dict() == {"X": 3, "Y": 2}
    assert balance.loc["Y", "balanced_weight"] == pytest.approx(5 / (2 * 2))
    prevalence = A.tag_prevalence(labels)
    assert prevalence.loc["polka dot", "known"] == 5  # the NaN row is unknown, not 0
    assert prevalence.loc["polka dot", "prevalence"] == pytest.approx(2 / 5)
    assert prevalence.loc["checker", "f1_all_positive"] == 0
    per_item = A.tags_per_item(labels)
    assert per_item["rows"].to_dict() == {0: 2, 1: 2, 2: 1}
    co = A.tag_cooccurrence(labels)
    assert co.loc["polka dot", "floral"] == 1 and co.loc["floral", "floral"] == 2
    by_cat = A.tag_by_category(labels)
    assert by_cat.loc["X", "polka dot"] == pytest.approx(1 / 3) and by_cat.loc["Y", "rows"] == 2
    colours = A.colour_by_category(labels)
    assert np.allclose(colours.sum(axis=1), 1.0)
    assert A.cramers_v(pd.Series(list("aabb")), pd.Series(list("xxyy"))) == pytest.approx(1.0)


def test_groups_and_split_overlap(labels: pd.DataFrame) -> None:
    table = A.group_sizes(labels)
    assert table.loc["s", "groups"] == 3 and table.loc["s", "largest"] == 2
    overlap = A.split_overlap(labels.iloc[:3], labels.iloc[2:])
    assert overlap["shared"] == 1  # g2 is on both sides
    assert A.split_overlap(labels.drop(columns="group"), labels)["shared"] == 0


def test_embedding_parts_cover_the_lite2_layout() -> None:
    parts = A.embedding_parts(get_encoder("efficientnet-lite2").to_dict())
    assert list(parts)[:3] == ["head", "mean3", "std3"]
    assert parts["head"] == slice(0, 1280) and parts["grid5"] == slice(1280 + 176 + 240, 1280 + 176 + 240 + 9 * 208)
    assert parts["std6"].stop == get_encoder("efficientnet-lite2").dim
    vectors = np.random.default_rng(0).normal(size=(4, 4480)).astype(np.float32)
    head = A.select_parts(vectors, ["head"], parts)
    assert head.shape == (4, 1280) and np.allclose(np.linalg.norm(head, axis=1), 1)


def test_near_duplicates_and_neighbours() -> None:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(50, 16)).astype(np.float32)
    vectors[7] = vectors[3] * 2 + 1e-4  # same direction: a duplicate for the cosine
    pairs = A.near_duplicates([f"u{i}" for i in range(50)], vectors, threshold=0.99, block=8)
    assert pairs[["a", "b"]].values.tolist() == [["u3", "u7"]] and pairs["cosine"][0] == pytest.approx(1, abs=1e-5)
    nearest = A.nearest_similarity(vectors, block=8)
    assert nearest[3] == pytest.approx(1, abs=1e-5) and nearest[0] < 0.99
    labels = pd.DataFrame({"split": ["train"] * 50}, index=[f"u{i}" for i in range(50)])
    assert A.annotate_pairs(pairs, labels, ["split"])["same_split"].all()
    clusters = np.repeat(np.eye(2, 16, dtype=np.float32), 10, axis=0) + rng.normal(0, 0.01, (20, 16))
    assert A.knn_label_agreement(clusters, ["a"] * 10 + ["b"] * 10, k=3) == 1.0


def test_scores_calibration_thresholds_and_mistakes() -> None:
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.1, 0.4], [0.2, 0.3, 0.5]])
    y = np.array([0, 2, 1, 2])
    assert top_k_accuracy(proba, y, 1) == 0.5 and top_k_accuracy(proba, y, 2) == 0.75
    table = A.reliability_table(proba, y, bins=2)
    assert table["count"].sum() == 4
    assert A.expected_calibration_error(np.array([[1.0, 0.0]]), np.array([0])) == pytest.approx(0)
    curve = A.threshold_curve(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.3, 0.1]), np.array([0.5, 0.2]))
    assert curve["precision"].tolist() == [0.5, pytest.approx(2 / 3)]
    assert curve["recall"].tolist() == [0.5, 1.0]
    worst = A.worst_category_mistakes(list("abcd"), proba, ["X", "Y", "Z"], ["X", "Z", "Y", "Z"], n=5)
    assert worst["uuid"].tolist() == ["c"]  # the only top-2 miss
    pairs = A.confused_pairs(["X", "X", "Y"], ["Y", "X", "Y"])
    assert pairs.iloc[0][["true", "predicted", "count"]].tolist() == ["X", "Y", 1]
    assert A.confused_pairs(["X", "Y"], ["X", "Y"]).empty  # no mistakes: an empty table, not an error
    tags = A.worst_tag_mistakes(list("abcd"), [0, 1, np.nan, 1], [0.9, 0.1, 0.99, 0.8], threshold=0.5)
    assert tags[["uuid", "kind"]].values.tolist() == [["a", "false positive"], ["b", "missed"]]


def _jpeg(colour, size=(40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="JPEG", quality=95)
    return out.getvalue()


def test_image_stats_duplicates_and_exif(tmp_path: Path) -> None:
    archive = tmp_path / "images.zip"
    white, black = _jpeg((255, 255, 255)), _jpeg((0, 0, 0), size=(30, 60))
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("images/w1.jpg", white)
        z.writestr("images/w2.jpg", white)
        z.writestr("images/k.jpg", black)
        z.writestr("images/bad.jpg", b"not an image")
    stats = I.image_stats(archive).set_index("uuid")
    assert stats.loc["w1", "brightness"] > 250 and stats.loc["w1", "white_share"] == 1.0
    assert stats.loc["k", "aspect"] == pytest.approx(0.5) and stats.loc["k", "brightness"] < 5
    assert stats.loc["bad", "error"] and pd.isna(stats.loc["bad", "width"])
    dups = I.exact_duplicates(stats.reset_index())
    assert sorted(dups.loc[0, "uuids"]) == ["w1", "w2"]
    rotated = I.with_exif_orientation(_jpeg((200, 10, 10), size=(40, 30)), 6)
    stages = I.preprocessing_stages(rotated, 24)
    assert stages[0][1].size == (30, 40)  # stored turned
    assert stages[1][1].size == (40, 30)  # upright again after EXIF
    assert stages[-1][1].size == (24, 24)
    assert set(I.thumbnails(archive, ["k", "bad"], size=16)) == {"k"}


def test_oof_predict_and_sliced_embeddings() -> None:
    from classifiers.heads import TagLogReg
    from embed.cache import Embeddings

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 30).astype(float)
    X = rng.normal(size=(60, 8)).astype(np.float32) + y[:, None]
    groups = np.arange(60) // 2  # pairs of rows share a group
    oof = A.oof_predict(lambda: TagLogReg("t", Cs=[1.0], cv=2), X, y, groups, n_splits=3)
    assert oof.shape == (60,) and ((oof >= 0.5) == (y == 1)).mean() > 0.8
    manifest = {"encoder": get_encoder("efficientnet-lite2").to_dict()}  # the parts come from the manifest
    embeddings = Embeddings(manifest, np.array(["a", "b"]), rng.normal(size=(2, 4480)).astype(np.float32))
    head_only = A.sliced_embeddings(embeddings, ["head"])
    assert head_only.vectors.shape == (2, 1280) and head_only.encoder["dim"] == 1280
    assert head_only.encoder["parts"] == [["head", 1280]]
    assert manifest["encoder"]["dim"] == 4480  # the original is untouched


def test_cv_against_test_flags_an_optimistic_estimate() -> None:
    info = {"category": {"cv": {"top1": 0.83, "top2": 0.93}},
            "tags": {"dots": {"cv": {"precision": 0.8, "recall": 0.8, "f1": 0.80}}}}
    result = {"category": {"top1": 0.84, "top2": 0.92}, "tags": {"dots": {"precision": 0.7, "recall": 0.76, "f1": 0.73}}}
    intervals = {"category": {"top1": [0.80, 0.87], "top2": [0.90, 0.95]},
                 "tags": {"dots": {"precision": [0.62, 0.79], "recall": [0.68, 0.84], "f1": [0.67, 0.79]}}}
    table = A.cv_against_test(info, result, intervals)
    assert table["CV within the test interval"].to_dict() == {
        "category top-1": True, "category top-2": True, "dots precision": False, "dots recall": True, "dots f1": False}
    assert table.loc["dots f1", "test 95% high"] == 0.79
