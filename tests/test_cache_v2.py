"""Cache formats 2 and 3 (embed/cache/): immutable parts, one writer, crash-safe compaction, filtered reads,
format-1 upgrade, format-2 (list) caches beside format-3 (binary) ones. Uses a fake 8-d encoder spec: no images,
no ONNX."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embed.cache import maintenance
from embed import cli
from embed.cache import (FORMAT_VERSION, JOURNAL, MANIFEST, CacheLocked, CacheWriter, embedding_table, iter_batches,
                         live_parts, part_files, part_info, read_cache, vectors_of)
from embed.encoders import ENCODERS
from vinted_tagger.files import write_parquet

DIM = 8
SPEC = dataclasses.replace(ENCODERS["efficientnet-lite2"], name="fake", sha256="0" * 64, dim=DIM, parts=())
REPO = Path(__file__).resolve().parents[1]


def rows(n: int, start: int = 0) -> tuple[list[str], np.ndarray]:
    uuids = [f"u{i:05d}" for i in range(start, start + n)]
    vectors = np.arange(start, start + n, dtype=np.float32)[:, None] + np.linspace(0, 1, DIM, dtype=np.float32)
    return uuids, vectors


def build(folder: Path, n: int, flush_rows: int, start: int = 0) -> Path:
    with CacheWriter(folder, SPEC, versions={}, flush_rows=flush_rows) as writer:
        uuids, vectors = rows(n, start)
        for i in range(0, n, 7):
            writer.add(uuids[i : i + 7], vectors[i : i + 7])
    return folder


def assert_exact(folder: Path, n: int) -> None:
    """Every reader sees rows u00000..u{n-1} once each, with their own vectors."""
    frame = pd.read_parquet(folder)
    assert frame["uuid"].is_unique and len(frame) == n
    cache = read_cache(folder)
    expected_uuids, expected = rows(n)
    order = np.argsort(cache.uuids)
    assert cache.uuids[order].tolist() == expected_uuids
    np.testing.assert_array_equal(cache.vectors[order], expected)
    assert json.loads((folder / MANIFEST).read_text())["rows"] == n


def test_append_writes_new_parts_and_never_rewrites_old_ones(tmp_path) -> None:
    folder = build(tmp_path / "cache", 50, flush_rows=20)
    before = {p.name: p.stat().st_mtime_ns for p in part_files(folder)}
    assert len(before) == 3  # 20 + 20 + the last 10 flushed on close
    with CacheWriter(folder, SPEC, versions={}) as writer:
        uuids, vectors = rows(60)
        todo = writer.missing(uuids)
        assert todo == uuids[50:]  # cached uuids are known without loading their vectors
        writer.add(todo, vectors[50:])
    after = {p.name: p.stat().st_mtime_ns for p in part_files(folder)}
    assert {k: v for k, v in after.items() if k in before} == before
    assert json.loads((folder / MANIFEST).read_text())["format_version"] == FORMAT_VERSION == 3
    assert_exact(folder, 60)


def test_reading_only_some_uuids(tmp_path) -> None:
    folder = build(tmp_path / "cache", 40, flush_rows=8)
    wanted = ["u00033", "u00002", "nope", "u00017"]
    cache = read_cache(folder, uuids=wanted)
    assert sorted(cache.uuids) == ["u00002", "u00017", "u00033"]
    vectors, found = cache.take(wanted)
    np.testing.assert_array_equal(vectors, rows(40)[1][[33, 2, 17]])
    assert found.tolist() == [True, True, False, True]


def test_second_writer_is_refused(tmp_path, capsys) -> None:
    folder = build(tmp_path / "cache", 10, flush_rows=8)
    with CacheWriter(folder, SPEC, versions={}):
        with pytest.raises(CacheLocked, match="being written by another process"):
            CacheWriter(folder, SPEC, versions={})
        # Another process (an `embed` run) is refused too, in one line with exit status 2.
        assert cli.main(["--compact", "--out", str(folder)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "being written by another process" in err[0]
    CacheWriter(folder, SPEC, versions={}).close()  # free again once the first writer is closed


KILLED_WRITER = """
import os, signal, sys, dataclasses, numpy as np
from embed.cache import CacheWriter
from embed.encoders import ENCODERS
from vinted_tagger.files import write_parquet
spec = dataclasses.replace(ENCODERS["efficientnet-lite2"], name="fake", sha256="0" * 64, dim=8, parts=())
writer = CacheWriter(sys.argv[1], spec, versions={}, flush_rows=4)
writer.add([f"k{i}" for i in range(4)], np.ones((4, 8), np.float32))  # a whole part
writer.add(["k4", "k5"], np.ones((2, 8), np.float32))
os.kill(os.getpid(), signal.SIGKILL)  # holding the lock, with 2 rows pending
"""


def test_lock_is_released_by_kill_9(tmp_path) -> None:
    folder = tmp_path / "cache"
    env = {"PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(folder)], env=env, capture_output=True, timeout=60)
    assert done.returncode == -9, done.stderr.decode()[-2000:]
    with CacheWriter(folder, SPEC, versions={}) as writer:  # not refused: the kernel dropped the lock
        assert writer.missing([f"k{i}" for i in range(6)]) == ["k4", "k5"]


def test_compaction_merges_small_parts_only(tmp_path) -> None:
    folder = build(tmp_path / "cache", 100, flush_rows=7)
    assert [part_info(p)["rows"] for p in part_files(folder)] == [7] * 14 + [2]
    with CacheWriter(folder, SPEC, versions={}) as writer:
        assert writer.compact(target_rows=35) == 15
    assert sorted(part_info(p)["rows"] for p in part_files(folder)) == [30, 35, 35]  # groups of up to 35 rows
    assert not (folder / JOURNAL).exists()
    assert_exact(folder, 100)
    with CacheWriter(folder, SPEC, versions={}) as writer:
        assert writer.compact(target_rows=35) == 0  # one small part: nothing to merge it with
        assert writer.compact(target_rows=1000) == 3
    assert [part_info(p)["rows"] for p in part_files(folder)] == [100]
    assert_exact(folder, 100)


class Killed(Exception):
    pass


@pytest.mark.parametrize("crash", ["before-journal", "after-deletes"])
def test_killed_compaction_loses_nothing_and_never_shows_a_row_twice(tmp_path, monkeypatch, crash) -> None:
    folder = build(tmp_path / "cache", 30, flush_rows=10)
    real_replace, real_json = maintenance.os.replace, maintenance.write_json

    def replace(src, dst):
        if crash == "after-deletes" and Path(src).name.startswith("_part-"):
            raise Killed  # sources deleted, merged part still hidden
        return real_replace(src, dst)

    def write_json(path, data):
        if crash == "before-journal" and Path(path).name == JOURNAL:
            raise Killed  # merged part written (hidden), no journal yet
        return real_json(path, data)

    with monkeypatch.context() as patch:
        patch.setattr(maintenance.os, "replace", replace)
        patch.setattr(maintenance, "write_json", write_json)
        writer = CacheWriter(folder, SPEC, versions={})
        with pytest.raises(Killed):
            maintenance.compact(folder, target_rows=100)
        writer.lock.release()  # what a kill does

    plain = pd.read_parquet(folder)
    assert len(plain) == 0 or plain["uuid"].is_unique  # a plain reader never sees a row twice...
    assert len(plain) == (30 if crash == "before-journal" else 0)  # ...and may briefly miss a merging group
    assert len(read_cache(folder).uuids) == 30  # our reader follows the journal: every row, once
    assert len(live_parts(folder)) == (3 if crash == "before-journal" else 1)

    CacheWriter(folder, SPEC, versions={}).close()  # the next writer rolls back or finishes
    assert not (folder / JOURNAL).exists() and not list(folder.glob("_part-*"))
    assert_exact(folder, 30)


def make_v1_cache(folder: Path) -> None:
    """What an older release left after a kill between compaction's rename and its deletes."""
    folder.mkdir()
    uuids, vectors = rows(20)
    for stamp, (first, last) in ((10, (0, 12)), (20, (8, 20)), (30, (0, 20))):
        table = embedding_table(uuids[first:last], vectors[first:last], format_version=1)
        write_parquet(table, folder / f"part-{stamp:020d}.parquet")
    manifest = {"format_version": 1, "encoder": SPEC.to_dict(), "versions": {}, "rows": 20,
                "created_at": "2026-01-01T00:00:00+00:00", "updated_at": "2026-01-01T00:00:00+00:00"}
    (folder / MANIFEST).write_text(json.dumps(manifest))


def test_format_1_cache_is_read_and_upgraded(tmp_path, capsys) -> None:
    folder = tmp_path / "v1"
    make_v1_cache(folder)
    with pytest.warns(UserWarning, match="format 1"):
        cache = read_cache(folder)
    assert sorted(cache.uuids) == rows(20)[0]
    with CacheWriter(folder, SPEC, versions={}):
        pass
    assert "upgraded from format 1 to 2 (24 duplicate rows dropped, 20 rows kept)" in capsys.readouterr().err
    assert_exact(folder, 20)
    assert len(part_files(folder)) == 2  # the third part held only duplicates


def test_format_1_cache_streams_each_uuid_once(tmp_path) -> None:
    folder = tmp_path / "v1"
    make_v1_cache(folder)
    uuids, vectors = rows(20)
    with pytest.warns(UserWarning, match="format 1"):
        batches = list(iter_batches(folder, ["uuid", "embedding"], batch_rows=5))
    got = [u for batch in batches for u in batch.column("uuid").to_pylist()]
    assert got == uuids  # the first part's rows, then only the new ones of the next parts
    assert np.array_equal(np.vstack([vectors_of(b, DIM) for b in batches]), vectors)


def test_format_3_stores_vectors_as_little_endian_binary(tmp_path) -> None:
    folder = build(tmp_path / "cache", 30, flush_rows=20)
    for part in part_files(folder):
        field = pq.read_schema(part).field("embedding")
        assert field.type == pa.binary(4 * DIM) and not field.nullable
    frame = pd.read_parquet(folder)  # what the README tells a plain reader to do with the bytes
    plain = np.frombuffer(b"".join(frame["embedding"]), "<f4").reshape(len(frame), DIM)
    np.testing.assert_array_equal(plain, rows(30)[1])
    assert_exact(folder, 30)


def test_format_2_cache_is_read_and_appended_in_its_own_schema(tmp_path) -> None:
    """A cache of an older release (float32 lists) keeps one schema across old and new parts."""
    folder = tmp_path / "v2"
    folder.mkdir()
    uuids, vectors = rows(20)
    # Exactly what the previous release wrote (its embedding_table), not today's code for format 2.
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    old = pa.table({"uuid": pa.array(uuids, type=pa.string()),
                    "embedding": pa.FixedSizeListArray.from_arrays(flat, DIM)})
    write_parquet(old, folder / "part-00000000000000000010.parquet")
    manifest = {"format_version": 2, "encoder": SPEC.to_dict(), "versions": {}, "rows": 20,
                "created_at": "2026-01-01T00:00:00+00:00", "updated_at": "2026-01-01T00:00:00+00:00"}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    np.testing.assert_array_equal(read_cache(folder).vectors, vectors)

    build(folder, 10, flush_rows=4, start=20)
    schemas = {pq.read_schema(part).remove_metadata() for part in part_files(folder)}
    assert len(schemas) == 1 and len(part_files(folder)) == 3  # the old part's schema, read back from Parquet
    assert pa.types.is_fixed_size_list(schemas.pop().field("embedding").type)
    assert json.loads((folder / MANIFEST).read_text())["format_version"] == 2
    assert_exact(folder, 30)  # pandas reads old and new parts as one dataset


def test_vectors_of_refuses_another_width(tmp_path) -> None:
    table = embedding_table(["a"], np.ones((1, DIM), np.float32))
    assert vectors_of(table, DIM).shape == (1, DIM)
    with pytest.raises(ValueError, match="8 floats wide, expected 4"):
        vectors_of(table, 4)


def test_parallel_readers_keep_cache_order(tmp_path) -> None:
    folder = build(tmp_path / "cache", 60, flush_rows=7)
    wanted = rows(60)[0][::3]
    one = [b.column("uuid").to_pylist() for b in iter_batches(folder, ["uuid"], wanted, batch_rows=4)]
    two = [b.column("uuid").to_pylist() for b in iter_batches(folder, ["uuid"], wanted, batch_rows=4, readers=2)]
    assert two == one and sorted(u for batch in two for u in batch) == sorted(wanted)


def test_embed_compact_cli(tmp_path, capsys) -> None:
    folder = build(tmp_path / "cache", 30, flush_rows=7)
    assert cli.main(["--compact", "--out", str(folder)]) == 0
    assert "5 small parts merged" in capsys.readouterr().out
    assert len(part_files(folder)) == 1
    assert_exact(folder, 30)
    assert cli.main(["--compact", "--out", str(tmp_path / "nothing")]) == 2  # not a cache: one line, no traceback
    with pytest.raises(SystemExit) as usage:  # --address needs --engine ray: argparse's one-line usage error
        cli.main([str(folder), "--out", str(folder), "--address", "x:1"])
    assert usage.value.code == 2
