"""Issue 10, points 4, 5 and 7 (model save): a model folder is validated on load, saved atomically as a whole,
and tags are declared and checked rather than guessed from the values."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from classifiers import artifacts
from classifiers import cli as classify_cli
from classifiers.artifacts import load_model, save_model
from classifiers.labels import tag_columns
from classifiers.model import TaggerModel
from classifiers.model_schema import ModelError
from classifiers.scorers import CategoryScorer, LinearScores, TagScorer
from classifiers.train import train
from embed.cache import Embeddings

ROOT = Path(__file__).resolve().parents[1]
DIM = 8


def linear(outputs: int, inputs: int, seed: int) -> LinearScores:
    rng = np.random.default_rng(seed)
    coef, intercept = rng.normal(size=(outputs, inputs)), rng.normal(size=outputs)
    return LinearScores(rng.normal(size=inputs).astype(np.float32), np.ones(inputs, np.float32),
                        coef.astype(np.float32), intercept.astype(np.float32))


def tiny_model(seed: int = 0) -> TaggerModel:
    category = CategoryScorer(["A", "B", "C"], linear(3, DIM, seed), temperature=1.5)
    tags = {"floral": TagScorer("floral", linear(1, DIM, seed + 1), 0.4),
            "checker": TagScorer("checker", linear(1, 4, seed + 2), 0.6, columns=((0, 2), (4, 6)))}
    return TaggerModel(category, tags, {"name": "stand-in", "dim": DIM}, {"data_fingerprint": f"seed{seed}"})


@pytest.fixture
def folder(tmp_path) -> Path:
    save_model(tiny_model(), tmp_path / "model")
    return tmp_path / "model"


def edit(folder: Path, change) -> None:
    path = folder / "model.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def test_saved_model_loads_and_predicts_the_same(folder) -> None:
    vectors = np.random.default_rng(5).normal(size=(4, DIM)).astype(np.float32)
    loaded = load_model(folder)
    np.testing.assert_array_equal(loaded.scores(vectors)[0], tiny_model().scores(vectors)[0])
    document = json.loads((folder / "model.json").read_text())
    assert len(document["category"]["sha256"]) == 64 and all(len(t["sha256"]) == 64 for t in document["tags"])


def test_committed_model_loads() -> None:
    model = load_model(ROOT / "artifacts" / "model")
    assert model.tag_names == ["polka dot", "floral", "checker"] and len(model.classes) == 17


TAMPERINGS = {
    "extra class first": (lambda d: d["category"]["classes"].insert(0, "Zzz"), "category: coef has shape"),
    "class named twice": (lambda d: d["category"]["classes"].__setitem__(1, "A"), "classes must be unique"),
    "temperature zero": (lambda d: d["category"].__setitem__("temperature", 0), "category.temperature"),
    "temperature negative": (lambda d: d["category"].__setitem__("temperature", -1.0), "category.temperature"),
    "threshold NaN": (lambda d: d["tags"][0].__setitem__("threshold", float("nan")), "tags[0].threshold"),
    "threshold string": (lambda d: d["tags"][0].__setitem__("threshold", "0.5"), "tags[0].threshold"),
    "threshold 1.5": (lambda d: d["tags"][1].__setitem__("threshold", 1.5), "tags[1].threshold"),
    "threshold 0": (lambda d: d["tags"][1].__setitem__("threshold", 0), "tags[1].threshold"),
    "missing key": (lambda d: d["category"].pop("file"), "category.file: Field required"),
    "missing sha256": (lambda d: d["tags"][0].pop("sha256"), "tags[0].sha256: Field required"),
    "columns outside": (lambda d: d["tags"][1].__setitem__("columns", [[0, 2], [6, 99]]), "tags[1].columns"),
    "columns too few": (lambda d: d["tags"][1].__setitem__("columns", [[0, 2]]), "tags[1] ('checker'): mean has shape"),
    "dim changed": (lambda d: d["encoder"].__setitem__("dim", 16), "category: mean has shape"),
    "path in file name": (lambda d: d["category"].__setitem__("file", "../category.npz"), "category.file"),
    "unknown version": (lambda d: d.__setitem__("format_version", 2), "format_version"),
    "tag twice": (lambda d: d["tags"][1].__setitem__("name", "floral"), "tag names must be unique"),
}


@pytest.mark.parametrize("name", list(TAMPERINGS))
def test_tampered_model_json_is_refused_naming_the_field(folder, name) -> None:
    change, words = TAMPERINGS[name]
    edit(folder, change)
    with pytest.raises(ModelError) as caught:
        load_model(folder)
    assert words in str(caught.value), caught.value


@pytest.mark.parametrize("how", ["swapped", "truncated", "missing", "nan-weights"])
def test_tampered_head_files_are_refused(folder, how) -> None:
    floral, checker = folder / "tag-floral.npz", folder / "tag-checker.npz"
    if how == "swapped":
        a, b = floral.read_bytes(), checker.read_bytes()
        floral.write_bytes(b)
        checker.write_bytes(a)
    elif how == "truncated":
        floral.write_bytes(floral.read_bytes()[:100])
    elif how == "missing":
        floral.unlink()
    else:  # weights edited AND the checksum updated: the shapes/values check still refuses
        model = tiny_model()
        model.tags["floral"].scores.coef[0, 0] = np.nan
        floral.write_bytes(artifacts.npz_bytes(model.tags["floral"].scores.arrays()))
        edit(folder, lambda d: d["tags"][0].__setitem__("sha256", artifacts.file_sha256(floral)))
    with pytest.raises(ModelError) as caught:
        load_model(folder)
    expected = {"swapped": "tags[0].sha256", "truncated": "tags[0].sha256", "missing": "is missing",
                "nan-weights": "non-finite"}[how]
    assert expected in str(caught.value)


def test_classify_predict_with_a_bad_model_is_one_line(folder, tmp_path, capsys) -> None:
    edit(folder, lambda d: d["category"]["classes"].insert(0, "Zzz"))
    (tmp_path / "cache").mkdir()
    assert classify_cli.main(["predict", "--model", str(folder), "--cache", str(tmp_path / "cache"),
                              "--out", str(tmp_path / "p.parquet")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "category: coef has shape" in err[0]


def test_service_never_becomes_ready_on_a_bad_model(folder) -> None:
    pytest.importorskip("fastapi")
    edit(folder, lambda d: d["tags"][0].__setitem__("threshold", float("nan")))
    out = subprocess.run([sys.executable, "-m", "service", "--model", str(folder), "--port", "0"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "tags[0].threshold" in out.stderr and "Traceback" not in out.stderr


def test_crash_while_saving_keeps_the_old_model_whole(folder, monkeypatch) -> None:
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    real = artifacts._save_scores
    calls = {"n": 0}

    def crash_on_second(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real(*args)

    monkeypatch.setattr(artifacts, "_save_scores", crash_on_second)
    with pytest.raises(OSError):
        save_model(tiny_model(seed=9), folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging folder left
    load_model(folder)


def test_resave_replaces_the_whole_folder(folder) -> None:
    (folder / "tag-old.npz").write_bytes((folder / "tag-floral.npz").read_bytes())  # a head of an older model
    model = tiny_model(seed=3)
    del model.tags["checker"]
    save_model(model, folder)
    assert sorted(p.name for p in folder.iterdir()) == ["category.npz", "model.json", "tag-floral.npz",
                                                          "training.json"]
    assert load_model(folder).info["data_fingerprint"] == "seed3"


def test_two_renames_fallback_swaps_too(folder, monkeypatch) -> None:
    monkeypatch.setattr(artifacts, "_exchange", lambda a, b: False)
    save_model(tiny_model(seed=4), folder)
    assert load_model(folder).info["data_fingerprint"] == "seed4"
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]


# --- point 5: declared tags -----------------------------------------------------------------------------


def labels_with(**columns) -> pd.DataFrame:
    base = {"uuid": [f"u{i}" for i in range(6)], "cc3": ["A", "B"] * 3, "polka dot": [0, 1, 0, 1, None, 0],
            "floral": [1, 0, 0, 1, 1, 0], "checker": [0.0, 0, 1, 1, 0, np.nan]}
    return pd.DataFrame({**base, **columns})


@pytest.mark.parametrize(("values", "shown"), [
    (["yes", "no", "yes", "no", "no", None], "'yes', 'no'"),
    ([0, 0.5, 1, 0, 1, 0], "0.5"),
    ([0, 2, 1, 0, 1, 0], "2"),
    (["0", "1", "0", "1", "0", "1"], "'0', '1'"),
])
def test_declared_tag_with_other_values_is_an_error(values, shown) -> None:
    with pytest.raises(ValueError, match="tag column 'floral' must hold only 0, 1 or null") as caught:
        tag_columns(labels_with(floral=values))
    assert shown in str(caught.value)


def test_other_binary_columns_are_not_tags() -> None:
    assert tag_columns(labels_with(price=[0, 1, 0, 1, 1, 0])) == ["polka dot", "floral", "checker"]
    assert tag_columns(labels_with(price=[0, 1, 0, 1, 1, 0]), ["price"]) == ["price"]


def test_missing_declared_tag_is_named() -> None:
    with pytest.raises(ValueError, match="no tag column 'stripes'"):
        tag_columns(labels_with(), ["floral", "stripes"])


def test_train_cli_with_bad_tag_values_fails_before_training(tmp_path, monkeypatch, capsys) -> None:
    labels = labels_with(floral=["yes", "no", "yes", "no", "no", None])
    labels.to_parquet(tmp_path / "data.parquet")
    embeddings = Embeddings({"encoder": {"name": "stand-in", "dim": DIM}}, labels["uuid"].to_numpy(),
                            np.zeros((6, DIM), np.float32))
    monkeypatch.setattr("classifiers.train.read_cache", lambda *a: pytest.fail("read the cache first"))
    with pytest.raises(ValueError, match="'floral'"):
        train(labels, embeddings)
    (tmp_path / "cache").mkdir()
    assert classify_cli.main(["train", "--data", str(tmp_path / "data.parquet"), "--cache", str(tmp_path / "cache"),
                              "--out", str(tmp_path / "model")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tag column 'floral'" in err[0] and "'yes', 'no'" in err[0]


def test_save_refuses_to_replace_a_folder_that_is_not_a_model(tmp_path) -> None:
    target = tmp_path / "home"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(ModelError, match="not a model folder"):
        save_model(tiny_model(), target)
    assert (target / "notes.txt").read_text() == "mine"
    shutil.rmtree(target)
