"""Tests for the classifiers package: heads, training, artifacts, prediction, evaluation and the CLI.

Everything runs on synthetic embeddings written to a real cache folder (a fake 16-d encoder spec), so no
image is decoded and no network is used. The data have made-up classes and an extra tag "stripes" (tasks
must come from the data), uploader groups, NaN labels and one rare tag.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from classifiers import heads
from classifiers.artifacts import load_model, save_model
from classifiers.cli import main
from classifiers.evaluate import evaluate, format_report
from classifiers.heads import CategoryLogReg, TagLogReg, make_folds
from classifiers.predict import Tagger, predict_cache
from classifiers.train import texture_columns, train
from embed.cache import CacheWriter, read_cache
from embed.encoders import ENCODERS, EncoderMismatch

DIM = 16
CLASSES = ["ALPHA", "BETA", "GAMMA"]
TAGS = ["polka dot", "floral", "checker", "stripes"]
PREVALENCE = {"polka dot": 0.4, "floral": 0.35, "checker": 0.1, "stripes": 0.3}  # checker is the rare one
TAG_DIM = {tag: 8 + i for i, tag in enumerate(TAGS)}  # each tag pushes one coordinate
ROOT = Path(__file__).resolve().parents[1]


def fake_spec(name: str = "fake", digit: str = "0"):
    return dataclasses.replace(ENCODERS["efficientnet-lite2"], name=name, sha256=digit * 64, dim=DIM, parts=())


def synthetic(n: int = 300, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Labels (uuid, cc3, color1, tags, group) and vectors: class clusters plus one bump per present tag."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(CLASSES), DIM)) * 2.5
    centres[:, 8:] = 0  # the tag coordinates carry no class information
    y = rng.integers(0, len(CLASSES), n)
    vectors = centres[y] + rng.normal(size=(n, DIM))
    labels = pd.DataFrame({"uuid": [f"u{i:04d}" for i in range(n)], "cc3": np.array(CLASSES, dtype=object)[y],
                           "color1": "BLUE"})
    for tag in TAGS:
        present = rng.random(n) < PREVALENCE[tag]
        vectors[:, TAG_DIM[tag]] += 2.0 * present
        labels[tag] = present.astype(np.int64)
    labels["group"] = [f"sender-{i // 5}" for i in range(n)]  # five photos per uploader
    return labels, vectors.astype(np.float32)


def write_cache(folder: Path, uuids, vectors, spec=None) -> Path:
    with CacheWriter(folder, spec or fake_spec(), versions={}) as writer:
        writer.add(list(uuids), np.asarray(vectors, dtype=np.float32))
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict:
    """The synthetic set, a cache holding every vector, and a model trained on the first 240 rows."""
    folder = tmp_path_factory.mktemp("classifiers")
    labels, vectors = synthetic()
    cache = write_cache(folder / "cache", labels["uuid"], vectors)
    train_labels, test_labels = labels.iloc[:240].reset_index(drop=True), labels.iloc[240:].reset_index(drop=True)
    train_labels.loc[:29, "cc3"] = None  # unknown category: not a class, not used by the category head
    train_labels = train_labels.astype({"floral": "float64"})
    train_labels.loc[30:59, "floral"] = np.nan  # unknown tag: left out of that head only
    train_labels.to_parquet(folder / "data.parquet")
    test_labels[["uuid"]].to_parquet(folder / "test.parquet")
    test_labels.to_parquet(folder / "test_labels.parquet")
    model = train(folder / "data.parquet", cache, tags=TAGS)
    save_model(model, folder / "model")
    return {"folder": folder, "cache": cache, "labels": labels, "vectors": vectors, "train": train_labels,
            "test": test_labels, "model": model, "tagger": Tagger.load(folder / "model")}


# ------------------------------------------------------------------------------------------ discovery


def test_classes_and_tags_come_from_the_data(dataset) -> None:
    model = dataset["model"]
    assert model.classes == CLASSES  # not the assignment's five, and no "None"/"nan" class from nulls
    assert model.tag_names == TAGS  # the declared extra tag "stripes" is a tag; color1/group are not
    assert model.info["category"]["rows"] == 240 - 30
    assert model.info["tags"]["floral"]["rows"] == 240 - 30
    assert model.info["tags"]["stripes"]["rows"] == 240
    assert model.encoder["name"] == "fake" and model.encoder["dim"] == DIM


def test_nan_tag_is_unknown_not_zero(dataset, tmp_path) -> None:
    labels, vectors = dataset["labels"].iloc[:240].copy(), dataset["vectors"][:240]
    tagged = np.flatnonzero(labels["checker"].to_numpy() == 1)[:12]
    with_nan = labels.astype({"checker": "float64"})
    with_nan.loc[tagged, "checker"] = np.nan  # clear positives whose label is unknown
    dropped = labels.drop(index=tagged)
    cache = read_cache(write_cache(tmp_path / "cache", labels["uuid"], vectors))
    a = train(with_nan, cache, tags=TAGS).tags["checker"]
    b = train(dropped, cache, tags=TAGS).tags["checker"]
    # NaN rows are left out: the head equals one trained without them. Read as 0, these 12 positives
    # would have moved both the weights and the threshold.
    assert a.threshold == b.threshold
    np.testing.assert_array_equal(a.scores.coef, b.scores.coef)
    zeros = labels.astype({"checker": "float64"})
    zeros.loc[tagged, "checker"] = 0
    assert not np.array_equal(train(zeros, cache, tags=TAGS).tags["checker"].scores.coef, a.scores.coef)


def test_missing_uuid_in_training_is_reported_and_dropped(dataset) -> None:
    labels = dataset["train"].copy()
    extra = labels.iloc[:2].assign(uuid=["ghost-1", "ghost-2"])
    with pytest.warns(UserWarning, match="2 of 242 labelled rows have no embedding"):
        model = train(pd.concat([labels, extra], ignore_index=True), dataset["cache"], tags=TAGS)
    assert model.info["rows"]["labelled"] == 240


# --------------------------------------------------------------------------------------- folds, heads


def test_folds_keep_each_group_on_one_side() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 200)
    groups = np.array([f"g{i // 7}" for i in range(200)])
    folds = make_folds(y, groups, 5, 0)
    assert len(folds) == 5
    for train_rows, val_rows in folds:
        assert not set(groups[train_rows]) & set(groups[val_rows])
    assert sorted(np.concatenate([val for _, val in folds]).tolist()) == list(range(200))


def test_training_uses_the_groups(dataset, monkeypatch) -> None:
    seen = []
    original = heads.make_folds

    def spy(y, groups, n_splits, seed):
        seen.append(groups)
        return original(y, groups, n_splits, seed)

    monkeypatch.setattr(heads, "make_folds", spy)
    train(dataset["train"], read_cache(dataset["cache"]), tags=TAGS)
    assert len(seen) == 1 + len(TAGS)
    for groups in seen:
        assert groups is not None and all(g.startswith("sender-") for g in groups)


def test_threshold_comes_from_the_data(dataset) -> None:
    labels, vectors = dataset["labels"], dataset["vectors"]
    y = labels["checker"].to_numpy()
    head = TagLogReg("checker").fit(vectors, y, labels["group"].to_numpy())
    assert abs(head.threshold_ - 0.5) > 0.05  # 10% prevalence: the best F1 is not at 0.5
    f1 = lambda t: 2 * np.sum((head.oof_ >= t) & (y == 1)) / (np.sum(head.oof_ >= t) + np.sum(y == 1))  # noqa
    assert f1(head.threshold_) == pytest.approx(head.cv_["f1"])
    assert f1(head.threshold_) >= f1(0.5)
    assert set(head.cv_["per_C"]) == {str(c) for c in heads.TAG_CS} and head.C_ in heads.TAG_CS


def test_category_head_is_calibrated_and_chooses_c(dataset) -> None:
    labels, vectors = dataset["labels"], dataset["vectors"]
    head = CategoryLogReg().fit(vectors, labels["cc3"], labels["group"].to_numpy())
    assert list(head.classes_) == CLASSES
    assert head.C_ in heads.CATEGORY_CS and head.temperature_ > 0
    assert head.cv_["top1"] > 0.9 and head.cv_["top2"] >= head.cv_["top1"]
    proba = head.predict_proba(vectors)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    # Prediction is numpy only: softmax((x - mean) / scale @ W.T + b) / T)
    s = head.scorer_.scores
    logits = ((vectors - s.mean) / s.scale) @ s.coef.T + s.intercept
    np.testing.assert_allclose(proba, heads.softmax(logits / head.temperature_), rtol=1e-5)


def test_iteration_cap_is_silent(dataset) -> None:
    labels, vectors = dataset["labels"], dataset["vectors"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        CategoryLogReg(max_iter=2).fit(vectors, labels["cc3"], labels["group"].to_numpy())
        TagLogReg("floral", max_iter=2).fit(vectors, labels["floral"], labels["group"].to_numpy())
    assert not [w for w in caught if "converge" in str(w.message)]  # the cap is deliberate, not a problem


def test_unknown_head_name_lists_valid_ones(dataset) -> None:
    with pytest.raises(ValueError, match="unknown head 'svm'; valid heads: logreg, lightgbm, auto"):
        train(dataset["train"], dataset["cache"], head="svm", tags=TAGS)


# ---------------------------------------------------------------------------------------- prediction


def test_zero_one_or_several_tags_per_image(dataset) -> None:
    tagger = dataset["tagger"]
    base = np.zeros((4, DIM), np.float32)
    base[1, TAG_DIM["floral"]] = 4
    base[2, [TAG_DIM["polka dot"], TAG_DIM["checker"], TAG_DIM["stripes"]]] = 4
    base[3, [TAG_DIM[t] for t in TAGS]] = 4
    frame = tagger.predict_vectors(base)
    assert frame[TAGS].sum(axis=1).tolist() == [0, 1, 3, 4]
    assert frame.loc[1, "floral"] == 1


def test_prediction_columns_dtypes_and_order(dataset) -> None:
    tagger = dataset["tagger"]
    frame = tagger.predict_vectors(dataset["vectors"][:5])
    assert list(frame.columns) == ["category1", "category2", *TAGS]
    assert all(frame[t].dtype == np.int64 for t in TAGS)
    assert set(frame["category1"]) <= set(CLASSES) and (frame["category1"] != frame["category2"]).all()
    proba, _ = tagger.scores(dataset["vectors"][:5])
    assert frame["category1"].tolist() == [CLASSES[i] for i in proba.argmax(axis=1)]

    ids = dataset["test"]["uuid"].tolist()[::-1][:20] + ["not-embedded"] + dataset["test"]["uuid"].tolist()[:3]
    frame, missing = predict_cache(tagger, dataset["cache"], ids, with_scores=True)
    assert missing == ["not-embedded"]
    assert frame["uuid"].tolist() == [u for u in ids if u != "not-embedded"]
    assert list(frame.columns) == ["uuid", "category1", "category2", *TAGS, *[f"p_{c}" for c in CLASSES],
                                   *[f"score_{t}" for t in TAGS]]
    np.testing.assert_allclose(frame[[f"p_{c}" for c in CLASSES]].sum(axis=1), 1.0, rtol=1e-6)


def test_round_trip_gives_identical_predictions(dataset, tmp_path) -> None:
    vectors = dataset["vectors"]
    for model in (dataset["model"], train(dataset["train"], dataset["cache"], head="lightgbm", tags=TAGS)):
        save_model(model, tmp_path / model.info["head"])
        loaded = load_model(tmp_path / model.info["head"])
        for before, after in zip(model.scores(vectors), loaded.scores(vectors)):
            np.testing.assert_array_equal(before, after)
        np.testing.assert_array_equal(model.thresholds(), loaded.thresholds())
    assert (tmp_path / "lightgbm" / "category.lgb.txt").exists()
    assert (tmp_path / "logreg" / "tag-polka-dot.npz").exists()


def test_tag_heads_read_only_the_texture_parts(dataset, tmp_path) -> None:
    # The encoder names its parts; the tags must read only the texture statistics (mean*/std*), not the
    # head (what the object is) nor the grid (where things are).
    spec = dataclasses.replace(fake_spec(), parts=(("head", 2), ("mean3", 6), ("std3", 4), ("grid5", 2), ("std5", 2)))
    cache = write_cache(tmp_path / "cache", dataset["labels"]["uuid"], dataset["vectors"], spec)
    model = train(dataset["train"], cache, tags=TAGS)
    texture = ((2, 12), (14, 16))
    assert all(tag.columns == texture for tag in model.tags.values())
    assert model.info["tags"]["floral"]["features"] == 12
    save_model(model, tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    assert all(tag.columns == texture for tag in loaded.tags.values())
    vectors = dataset["vectors"].copy()
    category, tags = loaded.scores(vectors)
    vectors[:, [0, 1, 12, 13]] += 50.0  # move only the head and grid columns
    moved_category, moved_tags = loaded.scores(vectors)
    np.testing.assert_array_equal(moved_tags, tags)
    assert not np.allclose(moved_category, category)  # the category head reads every column


def test_texture_columns() -> None:
    parts = {"parts": [["head", 4], ["mean3", 2], ["std3", 1], ["grid5", 3], ["std5", 1], ["grid6", 2], ["std6", 1]]}
    assert texture_columns(parts, 14) == ((4, 7), (10, 11), (13, 14))
    assert texture_columns({"parts": [["mean3", 4], ["std3", 2]]}, 6) is None  # all columns are texture
    assert texture_columns({"parts": [["head", 6]]}, 6) is None  # no texture part: read everything
    assert texture_columns({}, 6) is None  # an encoder without named parts
    with pytest.raises(ValueError, match="parts add up to 14, the embedding has 15"):
        texture_columns(parts, 15)


def test_training_is_deterministic(dataset, tmp_path) -> None:
    save_model(train(dataset["train"], dataset["cache"], tags=TAGS), tmp_path / "again")
    first, second = dataset["folder"] / "model", tmp_path / "again"
    names = sorted(p.name for p in first.iterdir() if p.name != "training.json")  # timings change run to run
    assert names == sorted(p.name for p in second.iterdir() if p.name != "training.json")
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_cache_from_another_encoder_is_refused(dataset, tmp_path) -> None:
    other = write_cache(tmp_path / "other", ["a", "b"], np.zeros((2, DIM)), fake_spec("other", "1"))
    with pytest.raises(EncoderMismatch, match="encoder 'other'"):
        predict_cache(dataset["tagger"], other)


class FakeEncoder:
    """Stands in for embed.runtime.Encoder: bytes b"bad" fail, others map to a fixed vector."""

    def __init__(self, spec, vectors):
        from embed.variants import VARIANTS

        self.spec, self.vectors = spec, vectors
        self.variant = VARIANTS["onnxruntime-fp32"]
        self.record = {"variant": "onnxruntime-fp32", "runtime": "onnxruntime", "precision": "fp32",
                       "ran_precision": "fp32"}

    def embed_images(self, images):
        out = np.full((len(images), DIM), np.nan, np.float32)
        errors = []
        for i, image in enumerate(images):
            errors.append("cannot identify image file" if image == b"bad" else None)
            if image != b"bad":
                out[i] = self.vectors[int(image.decode())]
        return out, errors


def test_predict_images_reports_failures(dataset, monkeypatch) -> None:
    from embed import runtime

    loads = []
    fake = FakeEncoder(fake_spec(), dataset["vectors"])
    monkeypatch.setattr(runtime.Encoder, "load", classmethod(lambda cls, spec, threads=None, **options: loads.append(1) or fake))
    tagger = Tagger.load(dataset["folder"] / "model")
    results = tagger.predict_images([b"0", b"bad", b"7"]) + tagger.predict_images([b"3"])
    assert len(loads) == 1  # loaded once, lazily
    assert results[1] == {"error": "cannot identify image file"}
    expected = tagger.predict_vectors(dataset["vectors"][[0, 7, 3]])
    for result, (_, row) in zip([results[0], results[2], results[3]], expected.iterrows()):
        assert (result["category1"], result["category2"]) == (row["category1"], row["category2"])
        assert list(result["categories"].values()) == sorted(result["categories"].values(), reverse=True)
        assert {t: int(v["present"]) for t, v in result["tags"].items()} == {t: row[t] for t in TAGS}

    fake.spec = fake_spec("other", "1")
    tagger = Tagger.load(dataset["folder"] / "model")
    with pytest.raises(EncoderMismatch):
        tagger.predict_images([b"0"])


def test_prediction_does_not_import_scikit_learn() -> None:
    code = "import sys, classifiers.predict, classifiers.artifacts; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------- evaluation


def test_evaluate_against_hand_computed_metrics() -> None:
    labels = pd.DataFrame({
        "uuid": ["a", "b", "c", "d", "e", "f"],
        "cc3": ["X", "X", "Y", "Z", None, "Y"],
        "polka dot": [1.0, 0.0, 1.0, np.nan, 0.0, 0.0],
    })
    predictions = pd.DataFrame({
        "uuid": ["a", "b", "c", "d", "e"],  # "f" has no prediction: counted, not scored
        "category1": ["X", "Y", "Y", "X", "Z"],
        "category2": ["Y", "X", "Z", "Y", "X"],
        "polka dot": [1, 1, 0, 1, 0],
    })
    result = evaluate(predictions, labels, tags=["polka dot"])
    assert result["rows"] == {"predictions": 5, "labels": 6, "matched": 5, "labels_without_prediction": 1}
    category = result["category"]
    # Known categories among predicted rows: a X->X, b X->Y (2nd X), c Y->Y, d Z->X (2nd Y). e is unknown.
    assert category["rows"] == 4
    assert category["top1"] == pytest.approx(2 / 4) and category["top2"] == pytest.approx(3 / 4)
    assert category["classes"] == ["X", "Y", "Z"]
    assert category["confusion"] == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    assert category["per_class_recall"] == {"X": 0.5, "Y": 1.0, "Z": 0.0}
    # polka dot known on a, b, c, e (d is NaN): tp=a, fp=b, fn=c, tn=e
    tag = result["tags"]["polka dot"]
    assert (tag["rows"], tag["tp"], tag["fp"], tag["fn"]) == (4, 1, 1, 1)
    assert tag["precision"] == pytest.approx(0.5) and tag["recall"] == pytest.approx(0.5)
    assert tag["f1"] == pytest.approx(0.5)
    assert result["tags_macro"]["f1"] == pytest.approx(0.5)
    assert "top-1 0.500" in format_report(result)


# ----------------------------------------------------------------------------------------------- CLI


def test_cli_train_predict_evaluate(dataset, tmp_path, capsys) -> None:
    folder, out = dataset["folder"], tmp_path / "model"
    assert main(["train", "--data", str(folder / "data.parquet"), "--cache", str(dataset["cache"]),
                 "--out", str(out), "--tags", *TAGS]) == 0
    printed, errors = capsys.readouterr()
    assert printed.count("\ntag ") == len(TAGS) and printed.startswith("category  logreg")
    assert "warning" not in errors
    assert (out / "model.json").exists()

    predictions = tmp_path / "predictions.parquet"
    assert main(["predict", "--model", str(out), "--cache", str(dataset["cache"]),
                 "--ids", str(folder / "test.parquet"), "--out", str(predictions)]) == 0
    assert f"wrote 60 rows to {predictions}" in capsys.readouterr().out
    frame = pd.read_parquet(predictions)
    assert list(frame.columns) == ["uuid", "category1", "category2", *TAGS]
    assert frame["uuid"].tolist() == dataset["test"]["uuid"].tolist()

    assert main(["evaluate", "--predictions", str(predictions), "--labels", str(folder / "test_labels.parquet"),
                 "--json", "--tags", *TAGS]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["category"]["top1"] > 0.9 and metrics["category"]["rows"] == 60
    assert list(metrics["tags"]) == TAGS and metrics["tags_macro"]["f1"] > 0.7, metrics["tags"]


def test_cli_predict_images_uses_the_model_encoder(dataset, tmp_path, monkeypatch, capsys) -> None:
    from embed import pipeline, runtime, summary

    calls, loads = [], []
    fake = FakeEncoder(fake_spec(), dataset["vectors"])
    monkeypatch.setattr(runtime.Encoder, "load", classmethod(lambda cls, spec, threads=None, **options:
                                                             loads.append((spec, options)) or fake))

    def fake_embed_sources(sources, out, encoder="efficientnet-lite2", ids=None, batch_size=32, progress=True,
                           **options):
        calls.append(encoder)
        wanted = ids or dataset["labels"]["uuid"].tolist()
        index = {u: i for i, u in enumerate(dataset["labels"]["uuid"])}
        ok = [u for u in wanted if u in index and u != "u0250"]
        write_cache(Path(out), ok, dataset["vectors"][[index[u] for u in ok]])
        missing = [u for u in wanted if u not in index]
        return summary.EmbedSummary(encoded=len(ok), failed=1, missing=missing,
                                    failures=[("u0250", "images.zip:u0250.jpg", "truncated JPEG")]
                                    + [(u, "", summary.MISSING_REASON) for u in missing])

    monkeypatch.setattr(pipeline, "embed_sources", fake_embed_sources)
    ids = tmp_path / "ids.parquet"
    pd.DataFrame({"uuid": ["u0251", "u0250", "nowhere", "u0245"]}).to_parquet(ids)
    out = tmp_path / "p.parquet"
    argv = ["predict", "--model", str(dataset["folder"] / "model"), "--images", str(dataset["folder"]),
            "--ids", str(ids), "--out", str(out), "--with-scores"]
    assert main(argv) == 2 and not out.exists()  # 2 of 4 ids without an embedding: refused, nothing written
    assert "2 of 4 ids have no embedding" in capsys.readouterr().err
    assert main([*argv, "--allow-missing"]) == 1  # written without the 2, and a photo failed
    captured = capsys.readouterr()
    assert calls == [fake, fake]  # the tagger's own encoder, loaded from the model's recorded spec, never exported
    assert [(spec["name"], options["export"]) for spec, options in loads] == [("fake", False)] * 2
    assert captured.err.splitlines()[0] == "classify: failed: images.zip:u0250.jpg: truncated JPEG"
    assert "2 uuid(s) without an embedding" in captured.err
    kept = tmp_path / "p_failures.csv"  # the failure list stays beside the predictions
    assert "images.zip:u0250.jpg,truncated JPEG" in kept.read_text() and f"listed in {kept}" in captured.err
    assert (tmp_path / "p_ignored.csv").exists() and (tmp_path / "p_duplicates.csv").exists()
    frame = pd.read_parquet(out)
    assert frame["uuid"].tolist() == ["u0251", "u0245"] and "score_stripes" in frame.columns


@pytest.mark.parametrize("argv, message", [
    (["train", "--data", "nope.parquet", "--cache", ".", "--out", "m"], "label file nope.parquet does not exist"),
    (["train", "--data", "x", "--cache", ".", "--out", "m", "--head", "svm"], "unknown head 'svm'; valid heads"),
    (["predict", "--model", "no-model", "--cache", ".", "--out", "p.parquet"], "no model at no-model"),
])
def test_cli_user_errors_exit_2_with_one_line(argv, message, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_refuses_cache_of_another_encoder(dataset, tmp_path, capsys) -> None:
    other = write_cache(tmp_path / "other", ["u0001"], np.zeros((1, DIM)), fake_spec("other", "1"))
    assert main(["predict", "--model", str(dataset["folder"] / "model"), "--cache", str(other),
                 "--out", str(tmp_path / "p.parquet")]) == 2
    assert "made with encoder 'other'" in capsys.readouterr().err
    assert not (tmp_path / "p.parquet").exists()


def test_auto_records_both_candidates(dataset) -> None:
    model = train(dataset["train"], dataset["cache"], head="auto", tags=TAGS)
    for choice in [model.info["category"], *model.info["tags"].values()]:
        assert set(choice["candidates"]) == {"logreg", "lightgbm"} and choice["kind"] in choice["candidates"]
        assert choice["reason"].startswith("auto: best out-of-fold")
    for choice, key in [(model.info["category"], heads.category_key),
                        *[(tag, heads.tag_key) for tag in model.info["tags"].values()]]:
        assert choice["kind"] == max(choice["candidates"], key=lambda name: key(choice["candidates"][name]))


def test_fold_without_a_class_and_two_classes() -> None:
    rng = np.random.default_rng(3)
    y = np.array(["A"] * 40 + ["B"] * 40 + ["C"] * 6)
    X = rng.normal(size=(86, 4)) + np.repeat(np.eye(4)[:3] * 3, [40, 40, 6], axis=0)
    groups = np.array([f"g{i % 20}" for i in range(80)] + ["c-only"] * 6)  # all C rows from one uploader
    head = CategoryLogReg().fit(X, y, groups)
    assert head.oof_.shape == (86, 3)
    assert head.oof_[80:, 2].max() < 0.01  # the fold that held C out could not predict it
    two = CategoryLogReg().fit(X[:80], y[:80], groups[:80])
    assert two.scorer_.scores.coef.shape == (2, 4)
    assert (two.predict_proba(X[:80]).argmax(axis=1) == (y[:80] == "B")).mean() > 0.9


def test_streaming_predict_on_a_many_part_cache_equals_in_memory(dataset, tmp_path, monkeypatch) -> None:
    import pyarrow.parquet as pq

    from classifiers import predict as predict_module
    from embed.cache import part_files

    labels, vectors = dataset["labels"], dataset["vectors"]
    with CacheWriter(tmp_path / "cache", fake_spec(), versions={}, flush_rows=16) as writer:
        for start in range(0, len(labels), 16):
            writer.add(labels["uuid"].iloc[start : start + 16].tolist(), vectors[start : start + 16])
    assert len(part_files(tmp_path / "cache")) == -(-len(labels) // 16)
    monkeypatch.setattr(predict_module, "BATCH_ROWS", 10)  # several batches per part, many row groups

    out = tmp_path / "predictions.parquet"
    assert main(["predict", "--model", str(dataset["folder"] / "model"), "--cache", str(tmp_path / "cache"),
                 "--out", str(out), "--with-scores"]) == 0
    assert pq.ParquetFile(out).metadata.num_row_groups >= len(labels) // 10
    streamed = pd.read_parquet(out)
    tagger = dataset["tagger"]
    expected = tagger.predict_vectors(vectors)
    expected.insert(0, "uuid", labels["uuid"].to_numpy())
    streamed = streamed.sort_values("uuid").reset_index(drop=True)
    expected = expected.sort_values("uuid").reset_index(drop=True)
    pd.testing.assert_frame_equal(streamed[expected.columns], expected, check_dtype=False)  # str vs object
    in_memory, _ = predict_cache(tagger, dataset["cache"], with_scores=True)
    pd.testing.assert_frame_equal(streamed, in_memory.sort_values("uuid").reset_index(drop=True), check_dtype=False)

    # With --ids: their order, streamed over the same many-part cache.
    ids = labels["uuid"].tolist()[::-7] + ["ghost"]
    pd.DataFrame({"uuid": ids}).to_parquet(tmp_path / "ids.parquet")
    assert main(["predict", "--model", str(dataset["folder"] / "model"), "--cache", str(tmp_path / "cache"),
                 "--ids", str(tmp_path / "ids.parquet"), "--out", str(out), "--overwrite", "--allow-missing"]) == 0
    assert pd.read_parquet(out)["uuid"].tolist() == ids[:-1]


def test_cli_predict_refuses_ids_the_cache_lacks(dataset, tmp_path, monkeypatch, capsys) -> None:
    from classifiers.predict import Tagger

    ids = ["ghost-1", *dataset["labels"]["uuid"].tolist()[:3], "ghost-2"]
    pd.DataFrame({"uuid": ids}).to_parquet(tmp_path / "ids.parquet")
    out = tmp_path / "p.parquet"
    argv = ["predict", "--model", str(dataset["folder"] / "model"), "--cache", str(dataset["cache"]),
            "--ids", str(tmp_path / "ids.parquet"), "--out", str(out)]
    with monkeypatch.context() as patched:  # refused before the model loads
        patched.setattr(Tagger, "load", classmethod(lambda *a, **k: pytest.fail("model loaded")))
        assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 of 5 ids have no embedding" in err[0] and "ghost-1, ghost-2" in err[0], err
    assert not out.exists()
    assert main([*argv, "--allow-missing"]) == 0
    assert "2 uuid(s) without an embedding left out" in capsys.readouterr().err
    assert pd.read_parquet(out)["uuid"].tolist() == ids[1:4]


def test_cli_never_replaces_unnamed_work(dataset, tmp_path, capsys) -> None:
    folder, model = dataset["folder"], dataset["folder"] / "model"
    before = (model / "model.json").read_bytes()
    train_argv = ["train", "--data", str(folder / "data.parquet"), "--cache", str(dataset["cache"]), "--out", str(model)]
    assert main(train_argv) == 2
    assert "already holds a model" in capsys.readouterr().err and (model / "model.json").read_bytes() == before
    out = tmp_path / "p.parquet"
    out.write_bytes(b"the user's file")
    assert main(["predict", "--model", str(model), "--cache", str(dataset["cache"]), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == b"the user's file"
    assert main(["predict", "--model", str(model), "--cache", str(dataset["cache"]), "--out", str(out),
                 "--overwrite"]) == 0
    assert len(pd.read_parquet(out)) == len(dataset["labels"])


def test_cli_head_search_shows_progress_and_what_won(dataset, tmp_path, capsys) -> None:
    folder = dataset["folder"]
    assert main(["train", "--data", str(folder / "data.parquet"), "--cache", str(dataset["cache"]),
                 "--out", str(tmp_path / "model"), "--tags", *TAGS, "--head", "auto"]) == 0
    printed, errors = capsys.readouterr()
    heads_count = 1 + len(TAGS)
    steps = heads_count * 2 * (heads.N_SPLITS + 1)  # two candidates, each fold and the all-rows fit
    assert f"{steps}/{steps}" in errors and "head search" in errors, errors[-500:]
    last = printed.strip().splitlines()[-2]  # before "saved ..."
    assert last.startswith("head search (auto): compared lightgbm and logreg on 5 ") and "chosen: category: " in last
    info = json.loads((tmp_path / "model" / "model.json").read_text())["training"]
    assert all(f"{tag}: {info['tags'][tag]['kind']}" in last for tag in TAGS)
