"""The embedding run (embed/pipeline.py, embed/engines/local.py) and its cache (embed/cache/): format, --ids,
bad images, resume, encoder mismatch. Most runs use the tiny open_clip encoder (64 px, 32-d); resume uses
EfficientNet-Lite2."""

from __future__ import annotations

import csv
import functools
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embed import pipeline
from embed.cache import MANIFEST, CacheWriter, part_files, read_cache
from embed.encoders import EncoderMismatch
from embed.images import load_pixels
from embed.pipeline import EncoderChoice, embed_sources
from embed.summary import FAILURES, MISSING_REASON
from embed.runtime import Encoder

REPO = Path(__file__).resolve().parents[1]


def run(sources, out, encoder, ids=None, **options):
    options.setdefault("threads", 1)
    options.setdefault("runtime", "onnxruntime")  # the fixtures' runtime: rows compare exactly
    options.setdefault("precision", "fp32")
    return embed_sources([str(s) for s in sources], out, EncoderChoice(encoder, **options), ids, progress=False)


def failures(out: Path) -> dict[str, tuple[str, str]]:
    with open(out / FAILURES, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len({row["uuid"] for row in rows}) == len(rows), "a uuid is reported twice"
    return {row["uuid"]: (row["origin"], row["reason"]) for row in rows}


def by_uuid(out: Path) -> dict[str, np.ndarray]:
    cache = read_cache(out)
    assert len(set(cache.uuids)) == len(cache.uuids), "a uuid is cached twice"
    return dict(zip(cache.uuids, cache.vectors))


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.fixture
def small_zip(tmp_path: Path, picture, image_bytes) -> tuple[Path, dict[str, bytes]]:
    """data.zip with 5 different photos under data/, like the assignment's archive."""
    images = {f"{i:05d}_img": image_bytes(picture(i, size=(80 + 10 * i, 64))) for i in range(5)}
    return make_zip(tmp_path / "data.zip", {f"data/{u}.jpg": b for u, b in images.items()}), images


# --- open_clip local checkpoint, cache format -----------------------------------------------------------


def test_tiny_open_clip_run_and_cache_format(tmp_path, small_zip, tiny_clip, tiny_encoder) -> None:
    archive, images = small_zip
    out = tmp_path / "cache"
    summary = run([archive], out, tiny_clip.name)
    assert (summary.encoded, summary.skipped, summary.failed, summary.missing) == (5, 0, 0, [])

    # Plain Parquet dataset: pandas reads the folder, the underscore files are skipped.
    frame = pd.read_parquet(out)
    assert list(frame.columns) == ["uuid", "embedding"]
    assert sorted(frame["uuid"]) == sorted(images)
    for part in part_files(out):
        schema = pq.read_schema(part)
        assert schema.field("uuid").type == pa.string()
        assert schema.field("embedding").type == pa.binary(4 * 32)  # 32 little-endian float32 per row
    vectors = np.frombuffer(b"".join(frame["embedding"]), "<f4").reshape(len(frame), 32)
    assert vectors.shape == (5, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    # Each row is the embedding of its own image (no shuffling between uuids).
    cached = by_uuid(out)
    for uuid, data in images.items():
        expected = tiny_encoder.encode(load_pixels(data, 64)[None])[0]
        np.testing.assert_allclose(cached[uuid], expected, atol=1e-5)
    assert np.abs(cached["00000_img"] - cached["00001_img"]).max() > 1e-3

    manifest = json.loads((out / MANIFEST).read_text())
    encoder = manifest["encoder"]
    assert encoder["name"] == tiny_clip.name and encoder["sha256"] == tiny_clip.sha256
    assert encoder["dim"] == 32 and encoder["input_size"] == 64 and encoder["resize"] == "shorter-crop"
    assert len(encoder["mean"]) == len(encoder["std"]) == 3
    assert manifest["rows"] == len(frame) == 5
    assert {"onnxruntime", "numpy", "pillow"} <= set(manifest["versions"])
    assert manifest["created_at"].startswith("20") and manifest["format_version"] == 3
    assert failures(out) == {}


def test_lite2_cache_dim(tmp_path, small_zip, lite2_encoder) -> None:
    archive, images = small_zip
    out = tmp_path / "cache"
    run([archive], out, "efficientnet-lite2", ids=list(images)[:2])
    cache = read_cache(out)
    assert cache.vectors.shape == (2, 4480)
    assert cache.manifest["encoder"]["sha256"] == lite2_encoder.spec.sha256 and cache.manifest["rows"] == 2


# --- --ids ----------------------------------------------------------------------------------------------


def test_ids_restrict_and_report_missing(tmp_path, small_zip, tiny_clip, tiny_encoder) -> None:
    archive, images = small_zip
    out = tmp_path / "cache"
    wanted = ["00003_img", "ghost_1", "00001_img", "ghost_2", "00003_img"]
    summary = run([archive], out, tiny_clip.name, ids=wanted)
    assert summary.encoded == 2 and summary.missing == ["ghost_1", "ghost_2"]
    assert sorted(read_cache(out).uuids) == ["00001_img", "00003_img"]
    reported = failures(out)
    assert reported == {"ghost_1": ("", MISSING_REASON), "ghost_2": ("", MISSING_REASON)}


# --- bad images -----------------------------------------------------------------------------------------

BROKEN_KINDS = ["zero-bytes", "text", "truncated-jpeg", "garbled-jpeg-header", "corrupt-png-data", "bomb", "bad-exif"]


def damaged_zip(path: Path, good: bytes) -> Path:
    """A zip whose member ``zip_crc`` has a flipped byte (CRC error) next to a healthy member ``zip_ok``."""
    make_zip(path, {"data/zip_ok.jpg": good, "data/zip_crc.jpg": good})
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("data/zip_crc.jpg")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start + info.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    return path


def test_bad_images_are_reported_and_the_run_goes_on(
    tmp_path, tiny_clip, tiny_encoder, broken_image, picture, image_bytes
) -> None:
    from PIL import Image

    folder = tmp_path / "upload"
    folder.mkdir()
    good = image_bytes(picture(0))
    (folder / "good.jpg").write_bytes(good)
    # Awkward but valid: all must be encoded.
    rgba = picture(1).convert("RGBA")
    rgba.putalpha(128)
    exif = Image.Exif()
    exif[0x0112] = 6
    valid = {
        "cmyk.jpg": image_bytes(picture(2).convert("CMYK"), "JPEG"),
        "palette.png": image_bytes(picture(3).convert("P"), "PNG"),
        "grey16.png": image_bytes(Image.fromarray((np.arange(64 * 48).reshape(48, 64) * 20).astype(np.uint16)), "PNG"),
        "rgba.png": image_bytes(rgba, "PNG"),
        "rotated.jpg": image_bytes(picture(4, size=(90, 60)), "JPEG", exif=exif.tobytes()),
    }
    for name, data in valid.items():
        (folder / name).write_bytes(data)
    expected_reasons = {}
    for kind in BROKEN_KINDS:
        data, reason = broken_image(kind)
        suffix = ".png" if kind in ("bomb", "corrupt-png-data") else ".jpg"
        (folder / f"bad_{kind}{suffix}").write_bytes(data)
        if kind != "text":  # a text file named .jpg is not a photo: ignored, not failed
            expected_reasons[f"bad_{kind}"] = reason
    archive = damaged_zip(tmp_path / "data.zip", good)
    expected_reasons["zip_crc"] = "cannot read"

    out = tmp_path / "cache"
    summary = run([folder, archive], out, tiny_clip.name, batch_size=4)

    encoded = {"good", "zip_ok", *(Path(n).stem for n in valid)}
    assert summary.encoded == len(encoded) and summary.failed == len(expected_reasons)
    assert {uuid for uuid, _, _ in summary.failures} == set(expected_reasons)
    assert summary.ignored_files == [("bad_text", str(folder / "bad_text.jpg"), "not an image (unrecognised format)")]
    assert set(read_cache(out).uuids) == encoded
    reported = failures(out)
    assert set(reported) == set(expected_reasons)
    for uuid, pattern in expected_reasons.items():
        origin, reason = reported[uuid]
        assert pattern.lower() in reason.lower(), (uuid, reason)
        assert uuid in origin
    # The rotated photo is embedded upright: same vector as the explicitly rotated pixels.
    upright = picture(4, size=(90, 60)).transpose(Image.Transpose.ROTATE_270)
    np.testing.assert_allclose(
        by_uuid(out)["rotated"], tiny_encoder.encode(tiny_encoder.pixels(upright)[None])[0], atol=0.02
    )


# --- resume after interruption --------------------------------------------------------------------------

N_RESUME = 8


@pytest.fixture(scope="module")
def resume_source(tmp_path_factory, picture, image_bytes) -> Path:
    folder = tmp_path_factory.mktemp("resume")
    members = {f"data/r{i:02d}.jpg": image_bytes(picture(20 + i, size=(72, 64))) for i in range(N_RESUME)}
    return make_zip(folder / "data.zip", members)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, resume_source, lite2_encoder) -> dict[str, np.ndarray]:
    """Embeddings of an uninterrupted run, in one batch."""
    out = tmp_path_factory.mktemp("reference") / "cache"
    summary = run([resume_source], out, "efficientnet-lite2", batch_size=N_RESUME)
    assert summary.encoded == N_RESUME
    return by_uuid(out)


def assert_same_embeddings(out: Path, reference: dict[str, np.ndarray]) -> None:
    cached = by_uuid(out)
    assert sorted(cached) == sorted(reference)
    for uuid, vector in reference.items():
        np.testing.assert_allclose(cached[uuid], vector, atol=1e-5, err_msg=uuid)


def interrupt_after(monkeypatch: pytest.MonkeyPatch, batches: int) -> None:
    """Encoder.encode raises KeyboardInterrupt (Ctrl-C) on call ``batches + 1``."""
    real = Encoder.encode
    calls = []

    def encode(self, pixels):
        calls.append(len(pixels))
        if len(calls) > batches:
            raise KeyboardInterrupt
        return real(self, pixels)

    monkeypatch.setattr(Encoder, "encode", encode)


def test_resume_after_ctrl_c(tmp_path, resume_source, reference, monkeypatch) -> None:
    out = tmp_path / "cache"
    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "CacheWriter", functools.partial(CacheWriter, flush_rows=4))
        interrupt_after(patch, batches=3)
        with pytest.raises(KeyboardInterrupt):
            run([resume_source], out, "efficientnet-lite2", batch_size=2)
    # Batches 1-2 were flushed as a part; batch 3 was pending and is flushed on the way out.
    partial = read_cache(out)
    assert sorted(partial.uuids) == ["r00", "r01", "r02", "r03", "r04", "r05"]
    assert partial.manifest["rows"] == 6

    summary = run([resume_source], out, "efficientnet-lite2", batch_size=2)
    assert (summary.skipped, summary.encoded, summary.failed) == (6, 2, 0)
    assert_same_embeddings(out, reference)
    assert read_cache(out).manifest["rows"] == N_RESUME

    # A finished cache: nothing to do, nothing rewritten.
    parts_before = [(p.name, p.stat().st_mtime_ns) for p in part_files(out)]
    again = run([resume_source], out, "efficientnet-lite2", batch_size=2)
    assert (again.skipped, again.encoded, again.failed) == (N_RESUME, 0, 0)
    assert [(p.name, p.stat().st_mtime_ns) for p in part_files(out)] == parts_before


KILLED_RUN = """
import functools, os, signal, sys
from embed import pipeline
from embed.cache import CacheWriter
from embed.runtime import Encoder

source, out, batches = sys.argv[1], sys.argv[2], int(sys.argv[3])
pipeline.CacheWriter = functools.partial(CacheWriter, flush_rows=4)
real, calls = Encoder.encode, []

def encode(self, pixels):
    calls.append(1)
    if len(calls) > batches:
        os.kill(os.getpid(), signal.SIGKILL)  # no finally, no flush, no compaction
    return real(self, pixels)

Encoder.encode = encode
pipeline.embed_sources([source], out, pipeline.EncoderChoice("efficientnet-lite2", "onnxruntime", "fp32", threads=1,
                                                           batch_size=2), progress=False)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
def test_resume_after_kill(tmp_path, resume_source, reference) -> None:
    out = tmp_path / "cache"
    script = tmp_path / "killed_run.py"
    script.write_text(KILLED_RUN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, str(script), str(resume_source), str(out), "3"], env=env, capture_output=True, timeout=120
    )
    assert done.returncode == -9, done.stderr.decode()[-2000:]
    # Batches 1-2 made a whole part; batch 3 was still pending in memory when the process died.
    assert sorted(read_cache(out).uuids) == ["r00", "r01", "r02", "r03"]
    # A kill in the middle of writing a part leaves a temporary file; readers and the next run ignore it.
    (out / ".part-99999999999999999999.parquet.12345.tmp").write_bytes(b"PAR1 half-written")

    summary = run([resume_source], out, "efficientnet-lite2", batch_size=2)
    assert (summary.skipped, summary.encoded) == (4, 4)
    assert_same_embeddings(out, reference)
    assert len(pd.read_parquet(out)) == N_RESUME


# --- one cache, one encoder -----------------------------------------------------------------------------


def test_cache_refuses_another_encoder(tmp_path, small_zip, tiny_clip, tiny_encoder, lite2_encoder) -> None:
    archive, images = small_zip
    out = tmp_path / "cache"
    run([archive], out, tiny_clip.name, ids=list(images)[:2])
    before = sorted(p.name for p in out.iterdir()), (out / MANIFEST).read_text()
    with pytest.raises(EncoderMismatch, match="re-embed"):
        run([archive], out, "efficientnet-lite2")
    assert (sorted(p.name for p in out.iterdir()), (out / MANIFEST).read_text()) == before


def test_cache_refuses_other_weights_of_same_name(tmp_path, small_zip, tiny_clip, tiny_encoder) -> None:
    archive, images = small_zip
    out = tmp_path / "cache"
    run([archive], out, tiny_clip.name, ids=list(images)[:2])
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["encoder"]["sha256"] = "0" * 64  # as if made from another checkpoint
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(EncoderMismatch) as error:
        run([archive], out, tiny_clip.name)
    assert "000000000000" in str(error.value) and tiny_clip.sha256[:12] in str(error.value)
    assert len(read_cache(out).uuids) == 2


def test_cache_refuses_another_layout_of_same_encoder(tmp_path, small_zip, tiny_clip, tiny_encoder) -> None:
    # A cache written by an older release (same weights, other pooling) must not take new-layout rows.
    archive, images = small_zip
    out = tmp_path / "cache"
    run([archive], out, tiny_clip.name, ids=list(images)[:2])
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["encoder"]["pooling"] = "old pooling"
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(EncoderMismatch, match="another embedding layout.*old pooling"):
        run([archive], out, tiny_clip.name)
    assert len(read_cache(out).uuids) == 2


# --- in-memory batches (the service's path) -------------------------------------------------------------


def test_embed_images_marks_bad_inputs(tiny_encoder, picture, image_bytes, broken_image) -> None:
    good = picture(0)
    vectors, errors = tiny_encoder.embed_images([image_bytes(good), broken_image("text")[0], good.convert("P")])
    assert vectors.shape == (3, 32)
    assert errors[0] is None and errors[2] is None and "not an image" in errors[1]
    assert np.isnan(vectors[1]).all() and np.isfinite(vectors[[0, 2]]).all()
    np.testing.assert_allclose(np.linalg.norm(vectors[[0, 2]], axis=1), 1.0, atol=1e-5)


def test_an_unknown_engine_is_refused_before_any_work(tmp_path) -> None:
    """The engines are the modules of embed/engines/; any other name is refused, naming the valid ones, before
    a source is listed or the cache folder made."""
    with pytest.raises(ValueError, match="unknown engine 'spark'; valid engines: local, ray"):
        embed_sources([tmp_path / "missing.zip"], tmp_path / "cache", "efficientnet-lite2", engine="spark")
    assert not (tmp_path / "cache").exists()
