"""Issue 10, point 7: every command checks where it writes before long work, a full disk or Ctrl-C keeps what
is finished, and each user mistake is one line with exit code 2 (never a traceback).

The tests run as root in CI, where permission bits stop nothing: a read-only location is simulated by making
writes there fail with EROFS, as a read-only mount does.
"""

from __future__ import annotations

import errno
import functools
import zipfile
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from classifiers import cli as classify_cli
from embed import cache as cache_module
from embed import cli as embed_cli
from embed import output, pipeline
from embed.cache import part_files, read_cache
from embed.runtime import Encoder


def one_line_error(capsys, *words: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0] and all(w in err[0] for w in words), err[0]
    return err[0]


@pytest.fixture
def photos(tmp_path, picture, image_bytes) -> Path:
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for i in range(6):
            handle.writestr(f"data/p{i}.jpg", image_bytes(picture(i, size=(70, 60))))
    return archive


def read_only(monkeypatch, folder: Path) -> None:
    """Writes under ``folder`` fail as on a read-only file system."""
    real_open = open

    def guarded(path, mode="r", *args, **kwargs):
        if any(m in mode for m in "wax") and Path(path).resolve().is_relative_to(folder.resolve()):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(output, "open", guarded, raising=False)


def test_embed_out_is_a_file(tmp_path, photos, capsys) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    assert embed_cli.main([str(photos), "--out", str(target), "--quiet"]) == 2
    one_line_error(capsys, "is a file, not a folder")


def test_embed_read_only_cache_fails_before_work(tmp_path, photos, tiny_clip, tiny_encoder, monkeypatch,
                                                 capsys) -> None:
    out = tmp_path / "cache"
    args = [str(photos), "--out", str(out), "--encoder", tiny_clip.name, "--quiet", "--threads", "1"]
    assert embed_cli.main(args) == 0
    capsys.readouterr()
    read_only(monkeypatch, out)
    monkeypatch.setattr(Encoder, "load", lambda *a, **k: pytest.fail("work started"))
    assert embed_cli.main(args) == 2  # the no-op re-run too: it would have rewritten the failures list
    one_line_error(capsys, "cannot write", "read-only")


def test_full_disk_mid_run_keeps_finished_parts_and_resumes(tmp_path, photos, tiny_clip, tiny_encoder,
                                                           monkeypatch, capsys) -> None:
    out = tmp_path / "cache"
    monkeypatch.setattr(pipeline, "CacheWriter", functools.partial(cache_module.CacheWriter, flush_rows=2))
    real_write = pq.write_table
    calls = {"n": 0}

    def fill_disk(table, where, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 2:  # the first part fits, then the disk is full
            Path(where).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(table, where, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", fill_disk)
    args = [str(photos), "--out", str(out), "--encoder", tiny_clip.name, "--quiet", "--threads", "1",
            "--batch-size", "2"]
    assert embed_cli.main(args) == 2
    message = one_line_error(capsys, "disk is full", "keeps 2 images", "run again to resume")
    assert "encoded images were not saved" in message
    assert len(read_cache(out).uuids) == 2 and len(part_files(out)) == 1
    assert not list(out.glob(".*.tmp"))  # no half-written part left behind
    monkeypatch.setattr(pq, "write_table", real_write)
    assert embed_cli.main(args) == 0
    assert sorted(read_cache(out).uuids) == [f"p{i}" for i in range(6)]


def test_ctrl_c_keeps_every_encoded_batch(tmp_path, photos, tiny_clip, tiny_encoder, monkeypatch) -> None:
    out = tmp_path / "cache"
    real_encode = Encoder.encode
    calls = {"n": 0}

    def interrupted(self, pixels):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_encode(self, pixels)

    monkeypatch.setattr(Encoder, "encode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.embed_sources([str(photos)], out, pipeline.EncoderChoice(tiny_clip.name, threads=1, batch_size=2),
                               progress=False)
    assert len(read_cache(out).uuids) == 4  # two whole batches, flushed although under flush_rows


@pytest.fixture
def labelled(tmp_path, tiny_clip, tiny_encoder, photos) -> dict:
    cache = tmp_path / "cache"
    pipeline.embed_sources([str(photos)], cache, pipeline.EncoderChoice(tiny_clip.name, threads=1), progress=False)
    labels = pd.DataFrame({"uuid": [f"p{i}" for i in range(6)], "cc3": ["A", "B"] * 3,
                           "polka dot": [0, 1] * 3, "floral": [1, 0, 0, 1, 1, 0], "checker": [0, 0, 1, 1, 0, 1]})
    labels.to_parquet(tmp_path / "data.parquet")
    return {"cache": cache, "data": tmp_path / "data.parquet", "labels": labels}


@pytest.mark.parametrize("target", ["file", "read-only", "not-a-model"])
def test_train_checks_its_output_before_training(tmp_path, labelled, target, monkeypatch, capsys) -> None:
    out = tmp_path / "model"
    if target == "file":
        out.write_text("x")
    elif target == "read-only":
        read_only(monkeypatch, tmp_path)
    else:
        out.mkdir()
        (out / "thesis.pdf").write_text("precious")
    monkeypatch.setattr("classifiers.train.train", lambda *a, **k: pytest.fail("trained before checking --out"))
    assert classify_cli.main(["train", "--data", str(labelled["data"]), "--cache", str(labelled["cache"]),
                              "--out", str(out)]) == 2
    one_line_error(capsys, str(out) if target != "read-only" else "read-only")
    if target == "not-a-model":
        assert (out / "thesis.pdf").read_text() == "precious"


def test_predict_out_is_a_folder(tmp_path, capsys) -> None:
    (tmp_path / "dir").mkdir()
    assert classify_cli.main(["predict", "--cache", str(tmp_path), "--out", str(tmp_path / "dir")]) == 2
    one_line_error(capsys, "is a folder, not a file")


def predictions_and_labels(tmp_path: Path, predictions: dict, labels: dict | None = None) -> list[str]:
    labels = labels or {"uuid": ["a", "b"], "cc3": ["X", "Y"], "polka dot": [1, 0], "floral": [0, 1],
                        "checker": [0, 0]}
    pd.DataFrame(predictions).to_parquet(tmp_path / "p.parquet")
    pd.DataFrame(labels).to_parquet(tmp_path / "l.parquet")
    return ["evaluate", "--predictions", str(tmp_path / "p.parquet"), "--labels", str(tmp_path / "l.parquet")]


TAGS = {"polka dot": [1, 0], "floral": [0, 1], "checker": [0, 0]}


@pytest.mark.parametrize(("case", "words"), [
    ("null-category1", ["null 'category1'", "'b'"]),
    ("duplicate-uuid", ["repeat 1 uuid", "'a'"]),
    ("missing-tag", ["lack column(s) 'checker'"]),
    ("bad-tag-value", ["tag column 'floral'", "7"]),
])
def test_evaluate_refuses_what_it_would_miscount(tmp_path, case, words, capsys) -> None:
    predictions = {"uuid": ["a", "b"], "category1": ["X", "Y"], "category2": ["Y", "X"], **TAGS}
    if case == "null-category1":
        predictions["category1"] = ["X", None]
    elif case == "duplicate-uuid":
        predictions = {k: v + v[:1] for k, v in predictions.items()}
    elif case == "missing-tag":
        del predictions["checker"]
    else:
        predictions["floral"] = [0, 7]
    assert classify_cli.main(predictions_and_labels(tmp_path, predictions)) == 2
    one_line_error(capsys, *words)


def test_evaluate_names_a_tag_missing_from_the_labels(tmp_path, capsys) -> None:
    predictions = {"uuid": ["a", "b"], "category1": ["X", "Y"], "category2": ["Y", "X"], **TAGS}
    labels = {"uuid": ["a", "b"], "cc3": ["X", "Y"], "polka dot": [1, 0], "floral": [0, 1]}
    assert classify_cli.main(predictions_and_labels(tmp_path, predictions, labels)) == 2
    one_line_error(capsys, "no tag column 'checker'")


def test_evaluate_not_a_parquet_file(tmp_path, capsys) -> None:
    predictions = {"uuid": ["a", "b"], "category1": ["X", "Y"], "category2": ["Y", "X"], **TAGS}
    args = predictions_and_labels(tmp_path, predictions)
    (tmp_path / "p.parquet").write_text("not parquet")
    assert classify_cli.main(args) == 2
    one_line_error(capsys, "not a readable Parquet file")

