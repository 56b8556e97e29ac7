"""Tests for the synthetic demo dataset generator (devtools/demo_data.py)."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from devtools import demo_data
from devtools.demo_data import CATEGORY_COUNTS, COLORS, TAG_COUNTS, TAGS, make_demo_dataset

LABEL_COLUMNS = ["uuid", "cc3", "color1", "polka dot", "floral", "checker"]
OUTPUT_FILES = ["data.zip", "data.parquet", "test.parquet", "test_labels.parquet", "demo_params.json"]
UUID_PATTERN = re.compile(r"^[0-9a-f]{5}_[A-Za-z0-9]{24}$")


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), n_train=60, n_test=20, seed=0)


def read(out: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(out / name)


def zip_members(out: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(out / "data.zip") as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_layout_columns_and_types(small_set: Path) -> None:
    assert sorted(p.name for p in small_set.iterdir()) == sorted(OUTPUT_FILES)
    label_schema = pa.schema([("uuid", pa.string()), ("cc3", pa.string()), ("color1", pa.string()),
                              ("polka dot", pa.int64()), ("floral", pa.int64()), ("checker", pa.int64())])
    assert pq.read_schema(small_set / "data.parquet").remove_metadata() == label_schema
    assert pq.read_schema(small_set / "test_labels.parquet").remove_metadata() == label_schema
    assert pq.read_schema(small_set / "test.parquet").remove_metadata() == pa.schema([("uuid", pa.string())])
    train = read(small_set, "data.parquet")
    assert list(train.columns) == LABEL_COLUMNS
    assert len(train) == 60 and len(read(small_set, "test.parquet")) == 20
    for column in TAGS:
        assert train[column].dtype == "int64"


def test_uuids_unique_shaped_and_in_zip(small_set: Path) -> None:
    train = read(small_set, "data.parquet")
    test = read(small_set, "test.parquet")
    test_labels = read(small_set, "test_labels.parquet")
    all_ids = list(train["uuid"]) + list(test["uuid"])
    assert len(set(all_ids)) == len(all_ids)
    assert set(train["uuid"]).isdisjoint(test["uuid"])
    assert all(UUID_PATTERN.match(u) for u in all_ids)
    assert list(test_labels["uuid"]) == list(test["uuid"])
    assert set(zip_members(small_set)) == {f"data/{u}.jpg" for u in all_ids}


def test_every_zip_member_is_a_jpeg(small_set: Path) -> None:
    for name, data in zip_members(small_set).items():
        image = Image.open(io.BytesIO(data))
        assert image.format == "JPEG", name
        image.load()
        assert image.mode == "RGB"
        assert 240 <= max(image.size) <= 320 and min(image.size) >= 200


def test_label_values(small_set: Path) -> None:
    for name in ["data.parquet", "test_labels.parquet"]:
        labels = read(small_set, name)
        assert set(labels["cc3"]) <= set(CATEGORY_COUNTS)
        assert set(labels["color1"]) <= set(COLORS)
        tags = labels[list(TAGS)]
        assert tags.isin([0, 1]).all().all()
        assert tags.sum(axis=1).max() <= 1


@pytest.mark.parametrize("seed", [0, 3])
def test_proportions_follow_the_real_labels(seed: int) -> None:
    # Labels only: rendering 400 images would add seconds and test nothing more here.
    train = pd.DataFrame(demo_data.make_rows(np.random.default_rng(seed), 400, set()))
    shares = train["cc3"].value_counts(normalize=True)
    total = sum(CATEGORY_COUNTS.values())
    for category, count in CATEGORY_COUNTS.items():
        assert shares[category] == pytest.approx(count / total, abs=0.02)
    tag_total = sum(TAG_COUNTS.values())
    untagged = (train[list(TAGS)].sum(axis=1) == 0).mean()
    assert untagged == pytest.approx(TAG_COUNTS[""] / tag_total, abs=0.02)
    assert 0.24 <= untagged <= 0.30
    for tag in TAGS:
        assert train[tag].mean() == pytest.approx(TAG_COUNTS[tag] / tag_total, abs=0.02)


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    first = make_demo_dataset(tmp_path / "a", n_train=20, n_test=5, seed=7)
    second = make_demo_dataset(tmp_path / "b", n_train=20, n_test=5, seed=7)
    other = make_demo_dataset(tmp_path / "c", n_train=20, n_test=5, seed=8)
    for name in OUTPUT_FILES:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert zip_members(first) == zip_members(second)
    assert not read(first, "data.parquet").equals(read(other, "data.parquet"))
    assert set(zip_members(first).values()).isdisjoint(zip_members(other).values())


def test_rerun_with_same_params_skips(tmp_path: Path) -> None:
    out = make_demo_dataset(tmp_path, n_train=10, n_test=4, seed=1)
    stamps = {name: (out / name).stat().st_mtime_ns for name in OUTPUT_FILES}
    assert make_demo_dataset(tmp_path, n_train=10, n_test=4, seed=1) == tmp_path
    assert {name: (out / name).stat().st_mtime_ns for name in OUTPUT_FILES} == stamps


def test_changed_params_or_missing_file_regenerates(tmp_path: Path) -> None:
    make_demo_dataset(tmp_path, n_train=10, n_test=4, seed=1)
    make_demo_dataset(tmp_path, n_train=12, n_test=4, seed=1)
    assert len(read(tmp_path, "data.parquet")) == 12
    assert json.loads((tmp_path / "demo_params.json").read_text())["n_train"] == 12
    (tmp_path / "test.parquet").unlink()
    make_demo_dataset(tmp_path, n_train=12, n_test=4, seed=1)
    assert len(read(tmp_path, "test.parquet")) == 4
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_cli_prints_one_line_and_reports_skip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [str(tmp_path / "out"), "--train", "8", "--test", "3", "--seed", "2"]
    assert demo_data.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "wrote" in lines[0]
    assert len(read(tmp_path / "out", "data.parquet")) == 8
    assert demo_data.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "skipped" in lines[0]


@pytest.mark.parametrize("n_train, n_test, seed", [(0, 5, 0), (5, -1, 0), (5, 5, -1)])
def test_rejects_bad_parameters(tmp_path: Path, n_train: int, n_test: int, seed: int) -> None:
    with pytest.raises(ValueError):
        make_demo_dataset(tmp_path, n_train=n_train, n_test=n_test, seed=seed)


@pytest.mark.parametrize("tag", ["", *TAGS])
def test_fabric_is_plain_only_without_a_tag(tag: str) -> None:
    base = COLORS["RED"]
    fabric = np.asarray(demo_data.fabric(np.random.default_rng(0), (120, 100), base, tag))
    not_base = np.any(fabric != np.array(base, dtype=np.uint8), axis=-1).mean()
    if tag:
        assert 0.05 < not_base < 0.8
    else:
        assert not_base == 0
