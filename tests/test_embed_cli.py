"""The ``embed`` command line (embed/cli.py): exit codes and what the user is told."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pandas as pd
import pytest

from embed import cli
from embed.cache import read_cache
from embed.runtime import Encoder


def embed(*args) -> int:
    return cli.main([str(a) for a in args] + ["--quiet", "--threads", "1"])


@pytest.fixture
def upload(tmp_path: Path, write_image) -> Path:
    folder = tmp_path / "upload"
    for i, uuid in enumerate(["u1", "u2", "u3"]):
        write_image(folder / f"{uuid}.jpg", seed=i)
    return folder


def test_ids_parquet_and_missing_uuid_is_printed(tmp_path, upload, tiny_clip, tiny_encoder, capsys) -> None:
    ids = tmp_path / "test.parquet"
    pd.DataFrame({"uuid": ["u3", "nowhere", "u1"]}).to_parquet(ids)
    out = tmp_path / "cache"
    assert embed(upload, "--out", out, "--encoder", tiny_clip.name, "--ids", ids) == 0
    captured = capsys.readouterr()
    assert "embed: missing: 1 id(s) have no image: nowhere" in captured.err
    assert "_failures.csv" in captured.err
    assert "2 encoded" in captured.out and "1 missing" in captured.out
    assert sorted(read_cache(out).uuids) == ["u1", "u3"]
    assert "nowhere" in (out / "_failures.csv").read_text()


def test_bad_images_exit_0_when_some_encode(tmp_path, upload, tiny_clip, tiny_encoder, broken_image, capsys) -> None:
    (upload / "broken.jpg").write_bytes(broken_image("truncated-jpeg")[0])
    (upload / "notes.jpg").write_bytes(broken_image("text")[0])
    out = tmp_path / "cache"
    assert embed(upload, "--out", out, "--encoder", tiny_clip.name) == 0
    captured = capsys.readouterr()
    failed, ignored = captured.err.splitlines()[:2]  # the failed photo first, named with its reason
    assert failed == f"embed: failed: {upload / 'broken.jpg'}: " + "corrupt or truncated image: image file is truncated (56 bytes not processed)"
    assert ignored == f"embed: ignored 1: not an image (unrecognised format), e.g. {upload / 'notes.jpg'}"
    assert "3 encoded" in captured.out and "1 failed" in captured.out and "1 ignored" in captured.out
    assert "notes.jpg" not in (out / "_failures.csv").read_text() and "notes.jpg" in (out / "_ignored.csv").read_text()


def test_exit_1_when_nothing_could_be_encoded(tmp_path, tiny_clip, tiny_encoder, broken_image, capsys) -> None:
    folder = tmp_path / "all-bad"
    folder.mkdir()
    for kind in ("zero-bytes", "text", "bomb"):
        (folder / f"{kind}.png").write_bytes(broken_image(kind)[0])
    assert embed(folder, "--out", tmp_path / "cache", "--encoder", tiny_clip.name) == 1
    captured = capsys.readouterr()
    assert "0 encoded" in captured.out and "2 failed" in captured.out and "1 ignored" in captured.out
    assert "decompression bomb" in captured.err


def test_finished_cache_rerun_exits_0(tmp_path, upload, tiny_clip, tiny_encoder, capsys) -> None:
    out = tmp_path / "cache"
    assert embed(upload, "--out", out, "--encoder", tiny_clip.name) == 0
    assert embed(upload, "--out", out, "--encoder", tiny_clip.name) == 0  # nothing new is not a failure
    assert "0 encoded, 3 skipped" in capsys.readouterr().out


def test_encoder_mismatch_exit_2(tmp_path, upload, tiny_clip, tiny_encoder, lite2_encoder, capsys) -> None:
    out = tmp_path / "cache"
    assert embed(upload, "--out", out, "--encoder", tiny_clip.name) == 0
    capsys.readouterr()
    assert embed(upload, "--out", out) == 2  # default encoder: efficientnet-lite2
    err = capsys.readouterr().err
    assert err.startswith("embed: error:") and "efficientnet-lite2" in err and tiny_clip.name in err
    assert "re-embed" in err
    assert len(read_cache(out).uuids) == 3


def test_ctrl_c_exit_130(tmp_path, upload, tiny_clip, tiny_encoder, monkeypatch, capsys) -> None:
    def interrupted(self, pixels):
        raise KeyboardInterrupt

    monkeypatch.setattr(Encoder, "encode", interrupted)
    assert embed(upload, "--out", tmp_path / "cache", "--encoder", tiny_clip.name) == 130
    assert "run again to resume" in capsys.readouterr().err


def test_usage_errors(tmp_path, capsys) -> None:
    assert embed(tmp_path / "no-such.zip", "--out", tmp_path / "cache") == 2
    assert "image source not found" in capsys.readouterr().err
    assert embed("--encoder", "nope", tmp_path, "--out", tmp_path / "c") == 2
    assert "valid encoders: efficientnet-lite2" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        embed(tmp_path)  # no --out
    assert stop.value.code == 2
    assert "--out" in capsys.readouterr().err


def test_zip_end_to_end(tmp_path, picture, image_bytes, tiny_clip, tiny_encoder, capsys) -> None:
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(3):
            zf.writestr(f"data/z{i}.jpg", image_bytes(picture(i)))
        zf.writestr("__MACOSX/data/._z0.jpg", b"fork")
    out = tmp_path / "cache"
    assert embed(archive, "--out", out, "--encoder", tiny_clip.name, "--batch-size", "2") == 0
    assert sorted(pd.read_parquet(out)["uuid"]) == ["z0", "z1", "z2"]
    assert "0 failed" in capsys.readouterr().out


def test_duplicates_are_named_and_key_path_keeps_both(tmp_path, tiny_clip, tiny_encoder, write_image, capsys) -> None:
    folder = tmp_path / "shop"
    write_image(folder / "a" / "shirt.jpg", seed=0)
    write_image(folder / "b" / "shirt.jpg", seed=1)
    assert embed(folder, "--out", tmp_path / "by-stem", "--encoder", tiny_clip.name) == 0
    captured = capsys.readouterr()
    assert f"embed: duplicate: {folder / 'b' / 'shirt.jpg'} left out" in captured.err
    assert str(folder / "a" / "shirt.jpg") in captured.err and "1 duplicates" in captured.out
    assert embed(folder, "--out", tmp_path / "by-path", "--encoder", tiny_clip.name, "--key", "path") == 0
    assert sorted(read_cache(tmp_path / "by-path").uuids) == ["a/shirt.jpg", "b/shirt.jpg"]
    assert "0 duplicates" in capsys.readouterr().out
