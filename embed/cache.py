"""The embedding cache: a folder of immutable Parquet parts (``uuid``, ``embedding``) + a manifest.

The folder is a plain Parquet dataset: ``pandas.read_parquet(CACHE)`` reads it, because the manifest
(``_manifest.json``), failures list (``_failures.csv``), lock (``_lock``) and compaction journal start with an
underscore, and temporary files with a dot, which Parquet readers skip.

Format 3 (this one) stores each row's embedding as its float32 values, little-endian, in one fixed-size
binary value of 4 x dim bytes (``vectors_of`` or ``np.frombuffer(b"".join(frame.embedding), "<f4")`` turns
a column of them into the (n, dim) matrix). A list of floats would be self-describing, but Parquet decodes a
repetition level for every float of a list, and decoding those made reading the cache the bottleneck of
streaming prediction; binary values are read straight from the memory-mapped part. Format 2 stored a
fixed-size list of float32; such a cache is still read, and appended to in its own format, so that each cache's
parts share one schema.

Formats 2 and 3 keep three rules, so that the cache grows without ever being rewritten:
- Parts are immutable: each is written once, to a temporary name then renamed, by the one writer of the cache.
- One writer per cache: ``CacheWriter`` holds an exclusive lock (``_lock``, released by the kernel even on
  ``kill -9``) and refuses to open while another holds it. It only writes uuids the cache does not hold, so
  parts never overlap and a reader needs no global de-duplication.
- Compaction (``compact``) only merges small parts, one group at a time, crash-safe: the merged part stays
  hidden (``_part-...``) while a journal names what it replaces; the sources are deleted, then the merged
  part is renamed into view. A killed compaction is finished on the next open. A plain reader may briefly
  miss a group's rows during the final rename but never sees a row twice; our own readers follow the journal
  and see every row once at any moment.

A format-1 cache (older releases: compacted by rewriting, could hold duplicate rows) is still read
(de-duplicated by uuid, with a warning) and is upgraded in place by the next writer.

A cache belongs to one encoder identity (``embed.encoders.identity``: weights checksum + layout digest):
adding another encoder's embeddings, or reading it with heads trained on another encoder, is refused.
"""

from __future__ import annotations

import csv
import functools
import itertools
import json
import os
import queue
import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import filelock
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from embed.encoders import EncoderSpec, check_same_encoder
from embed.variants import check_same_decisions, variant_of
from vinted_tagger.files import atomic_path, write_json, write_parquet

MANIFEST = "_manifest.json"
FAILURES = "_failures.csv"
LOCK = "_lock"
JOURNAL = "_compaction.json"
FORMAT_VERSION = 3  # what a new cache is written in
LIST_FORMAT = 2  # the last format whose embeddings are a fixed-size list of float32
READABLE_FORMATS = (1, LIST_FORMAT, FORMAT_VERSION)
PART_META = b"vinted_tagger"  # Parquet key-value metadata of a part: who made it
COMPACT_ROWS = 8192  # parts below this many rows are "small"; merged parts hold up to this many


class CacheLocked(ValueError):
    """Another process is writing this cache."""


def cache_runtimes(manifest: dict) -> list[dict]:
    """The runtime record of every variant whose embeddings a cache holds (none recorded: ONNX Runtime fp32)."""
    return [manifest.get("runtime") or {}, *({"variant": name} for name in manifest.get("also_ran", []))]


def embedding_table(uuids: list[str], vectors: np.ndarray, format_version: int = FORMAT_VERSION) -> pa.Table:
    """A part's rows in the schema of ``format_version`` (binary vectors from format 3, lists before)."""
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    n, dim = vectors.shape
    lists = format_version <= LIST_FORMAT
    if lists:
        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), type=pa.float32()), dim)
    else:
        column = pa.FixedSizeBinaryArray.from_buffers(pa.binary(4 * dim), n, [None, pa.py_buffer(vectors)])
    # Format 2 parts were written nullable: their appends stay so, since one cache's parts share one schema.
    schema = pa.schema([pa.field("uuid", pa.string()), pa.field("embedding", column.type, nullable=lists)])
    return pa.Table.from_arrays([pa.array(uuids, type=pa.string()), column], schema=schema)


def vectors_of(table: pa.Table | pa.RecordBatch, dim: int) -> np.ndarray:
    """The ``embedding`` column as a float32 (n, dim) array (without a copy when it is one binary chunk)."""
    column = table.column("embedding")
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_fixed_size_binary(column.type):
        if column.type.byte_width != 4 * dim:
            raise ValueError(f"cache embeddings are {column.type.byte_width // 4} floats wide, expected {dim}")
        data = column.buffers()[1]
        return np.frombuffer(data, "<f4", count=len(column) * dim, offset=column.offset * 4 * dim).reshape(-1, dim)
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=np.float32).reshape(-1, dim)


@dataclass
class Embeddings:
    """A cache read into memory: row i of ``vectors`` is the embedding of ``uuids[i]``."""

    manifest: dict
    uuids: np.ndarray  # of str
    vectors: np.ndarray  # float32, (n, dim)

    @property
    def encoder(self) -> dict:
        return self.manifest["encoder"]

    def take(self, wanted) -> tuple[np.ndarray, np.ndarray]:
        """Rows for ``wanted`` uuids that are present, in the order asked: (vectors, found mask)."""
        index = {u: i for i, u in enumerate(self.uuids)}
        rows = np.array([index.get(u, -1) for u in wanted], dtype=np.int64)
        found = rows >= 0
        return self.vectors[rows[found]], found


# --- reading ----------------------------------------------------------------------------------------------


def part_files(folder: Path) -> list[Path]:
    """The visible parts, oldest first (what a plain Parquet reader reads)."""
    return sorted(Path(folder).glob("part-*.parquet"))


def live_parts(folder: Path) -> list[Path]:
    """Parts that together hold every row exactly once, even while a compaction is under way."""
    folder = Path(folder)
    journal = _read_journal(folder)
    if journal is None:
        return part_files(folder)
    replaced = set(journal["sources"])
    parts = [p for p in part_files(folder) if p.name not in replaced]
    merged = journal.get("merged")
    if merged and (folder / merged).exists():
        parts.append(folder / merged)
    return sorted(parts, key=lambda p: p.name.lstrip("_"))


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{folder} is not an embedding cache (no {MANIFEST}); build it with `embed`")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is damaged ({error}); build the cache again with `embed`") from None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version not in READABLE_FORMATS:
        raise ValueError(f"{folder} has cache format {version}; this release reads formats "
                         f"{', '.join(map(str, READABLE_FORMATS))}")
    return manifest


def part_rows(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows


def part_info(path: Path) -> dict:
    """Who made a part: ``made_by`` (node labels of the encoders), ``written_by`` (host) and ``rows``."""
    metadata = pq.read_schema(path).metadata or {}
    info = json.loads(metadata[PART_META]) if PART_META in metadata else {}
    return {"rows": part_rows(path), **info}


def iter_batches(folder: str | Path, columns: list[str] | None = None, uuids: Iterable[str] | None = None,
                 batch_rows: int = 4096, readers: int = 1) -> Iterator[pa.RecordBatch]:
    """The cache's rows, part by part in batches of at most ``batch_rows`` (restricted to ``uuids``),
    each uuid once. Memory holds a few batches (``_read_ahead``), whatever the cache's size (format 1: plus a
    set of uuids). ``readers`` > 1 decodes that many parts at once in threads (Parquet decoding releases the GIL),
    the batches still in cache order."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    parts = live_parts(folder)
    dedup = manifest["format_version"] == 1 and len(parts) > 1  # one part cannot hold duplicates
    if dedup:
        warnings.warn(f"cache {folder} is format 1 and may hold duplicate rows (dropped while reading); "
                      f"`embed --compact --out {folder}` upgrades it to format {LIST_FORMAT}", stacklevel=2)
    wanted = None if uuids is None else pa.array(list(dict.fromkeys(map(str, uuids))), type=pa.string())
    needed = None if columns is None else list(dict.fromkeys(["uuid", *columns]))
    readings = [functools.partial(_part_batches, path, needed, wanted, batch_rows) for path in parts]
    if not dedup:
        for batch in _read_ahead(readings, readers) if readers > 1 else itertools.chain.from_iterable(
                reading() for reading in readings):
            yield batch if columns is None else batch.select(columns)
        return
    seen: set[str] = set()
    for reading in readings:  # in order: the first copy of a uuid is the one kept
        for batch in reading():
            batch = _drop_seen(batch, seen)
            if batch.num_rows:
                yield batch if columns is None else batch.select(columns)


def held_uuids(folder: Path, group_rows: int = 2**20) -> Iterator[pa.ChunkedArray]:
    """The uuid column of every live part, about ``group_rows`` uuids at a time: what an append checks its
    uuids against. One set look-up per group, not per part, and plain single-threaded column reads: on a
    200,000-row cache of 1,024-row parts this takes a quarter of the time a filtered scan does."""
    chunks, rows = [], 0
    for path in live_parts(folder):
        column = pq.ParquetFile(path).read(columns=["uuid"], use_threads=False).column("uuid")
        chunks.extend(column.chunks)
        rows += len(column)
        if rows >= group_rows:
            yield pa.chunked_array(chunks, type=pa.string())
            chunks, rows = [], 0
    if chunks:
        yield pa.chunked_array(chunks, type=pa.string())


def _part_batches(path: Path, needed: list[str] | None, wanted: pa.Array | None,
                  batch_rows: int) -> Iterator[pa.RecordBatch]:
    # Memory-mapped: binary vectors go from the page cache to the batch without a read() copy (which cost
    # more system time than decoding them); pre_buffer: each column chunk in one request.
    # Closed once read, not left to the garbage collector: a mapped part's pages count as the reader's memory.
    with pq.ParquetFile(path, memory_map=True, pre_buffer=True) as parquet:
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=needed):
            if wanted is not None:
                batch = batch.filter(pc.is_in(batch.column("uuid"), value_set=wanted))
            if batch.num_rows:
                yield batch


def _read_ahead(readings: list, readers: int, depth: int = 2) -> Iterator:
    """The items of each ``readings[i]()`` in order, ``readers`` of them read at once in threads: reading i
    starts only once the caller has reached reading i - ``readers``, and runs at most ``depth`` items ahead
    of the caller, so memory holds about (``readers`` + 1) x ``depth`` items however fast the readers are."""
    stop = threading.Event()
    end = object()
    reached = threading.Condition()
    position = [0]  # the reading the caller is taking items from

    def put(box: queue.Queue, item) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def fill(index: int, reading, box: queue.Queue) -> None:
        with reached:
            while position[0] < index - readers and not stop.is_set():
                reached.wait(0.1)
        if stop.is_set():  # the caller stopped early: this part is never read
            return
        try:
            for item in reading():
                if not put(box, item):
                    return
            put(box, end)
        except BaseException as error:  # handed to the caller, raised there
            put(box, error)

    pool = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="cache-reader")
    boxes = [queue.Queue(maxsize=depth) for _ in readings]
    try:
        for index, (reading, box) in enumerate(zip(readings, boxes)):
            pool.submit(fill, index, reading, box)  # started in this order: the caller's part is always being read
        for index, box in enumerate(boxes):
            with reached:
                position[0] = index
                reached.notify_all()
            while (item := box.get()) is not end:
                if isinstance(item, BaseException):
                    raise item
                yield item
    finally:  # also when the caller stops early: readers stop, parts not started never are
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)


def _drop_seen(batch: pa.RecordBatch, seen: set[str]) -> pa.RecordBatch:
    """The rows whose uuid is neither in ``seen`` nor earlier in the batch; adds the batch's uuids to ``seen``
    (set look-ups and a sort in C, no Python loop per row)."""
    values = batch.column("uuid").to_pylist()
    keep = ~np.fromiter(map(seen.__contains__, values), dtype=bool, count=len(values))
    first = np.zeros(len(values), dtype=bool)
    first[np.unique(np.asarray(values, dtype=object), return_index=True)[1]] = True
    keep &= first
    seen.update(values)
    return batch if keep.all() else batch.filter(pa.array(keep))


def read_table(folder: Path, columns: list[str] | None = None, uuids: Iterable[str] | None = None) -> pa.Table:
    names = columns or ["uuid", "embedding"]
    batches = list(iter_batches(folder, names, uuids))
    if not batches:
        manifest = read_manifest(folder)
        empty = np.zeros((0, manifest["encoder"]["dim"]), np.float32)
        return embedding_table([], empty, manifest["format_version"]).select(names)
    table = pa.Table.from_batches(batches)
    if "uuid" in names:  # parts never overlap; this guards against a hand-copied duplicate part
        uuid_values = table.column("uuid").to_numpy(zero_copy_only=False)
        _, first = np.unique(uuid_values, return_index=True)
        if len(first) < len(uuid_values):
            table = table.take(np.sort(first))
    return table


def read_cache(folder: str | Path, uuids: Iterable[str] | None = None) -> Embeddings:
    """The cache in memory; with ``uuids``, only those rows are read (a filtered scan, not the whole cache)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    table = read_table(folder, uuids=uuids)
    vectors = vectors_of(table, manifest["encoder"]["dim"])
    return Embeddings(manifest, table.column("uuid").to_numpy(zero_copy_only=False).astype(str), vectors)


# --- writing ----------------------------------------------------------------------------------------------


def node_label() -> str:
    """Where this process runs, for part metadata: the host name (the Ray engine adds its node)."""
    return socket.gethostname()


class CacheWriter:
    """The one writer of a cache folder: appends embeddings in immutable, atomically written parts.

    Use as a context manager (or call ``close``): the lock is held from opening to closing. Rows are
    buffered per ``made_by`` label, so each part records which node encoded it.
    """

    def __init__(self, folder: str | Path, spec: EncoderSpec, versions: dict, flush_rows: int = 1024,
                 runtime: dict | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.flush_rows = flush_rows
        self.lock = _acquire(self.folder)
        try:
            recover(self.folder)
            self.manifest = self._open_manifest(spec, versions)
            if self.manifest["format_version"] == 1:
                upgrade(self.folder, self.manifest)
            self._record_runtime(runtime)
        except BaseException:
            self.lock.release()
            raise
        self.written: set[str] = set()  # uuids added by this writer (parts never overlap)
        self.rows_before = sum(part_rows(p) for p in live_parts(self.folder))
        self.pending: dict[str, tuple[list[str], list[np.ndarray]]] = {}
        self.parts_written = 0

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Flush what is pending and release the lock."""
        if self.lock.is_locked:
            try:
                self.flush()
            finally:
                self.release()

    def release(self) -> None:
        """Release the lock without writing what is pending (the caller flushed, or gave up on it)."""
        if self.lock.is_locked:
            self.lock.release()

    def drop_pending(self) -> int:
        """Forget the rows not yet written (after a failed write); returns how many."""
        lost = [u for names, _ in self.pending.values() for u in names]
        self.pending = {}
        self.written.difference_update(lost)
        return len(lost)

    @property
    def rows(self) -> int:
        """Rows in the cache's written parts."""
        return self.rows_before + len(self.written) - sum(len(n) for n, _ in self.pending.values())

    def _open_manifest(self, spec: EncoderSpec, versions: dict) -> dict:
        encoder = spec.to_dict()
        if (self.folder / MANIFEST).exists():
            manifest = read_manifest(self.folder)
            check_same_encoder(encoder, manifest["encoder"], f"cache {self.folder}")
            return manifest
        if part_files(self.folder):
            raise ValueError(f"{self.folder} holds Parquet parts but no {MANIFEST}; refusing to guess their encoder")
        now = _now()
        manifest = {"format_version": FORMAT_VERSION, "encoder": encoder, "versions": versions,
                    "created_at": now, "updated_at": now, "rows": 0}
        write_json(self.folder / MANIFEST, manifest)
        return manifest

    def _record_runtime(self, runtime: dict | None) -> None:
        """The runtime record (embed.runtime.Encoder.record) of what fills the cache; another variant may add
        rows only if it gives the same decisions, and is then listed under ``also_ran``."""
        self.variant = None if runtime is None else runtime["variant"]  # what this writer's rows come from
        if runtime is None:
            return
        if "runtime" not in self.manifest and self.manifest["rows"] == 0:
            self.manifest["runtime"] = runtime
            write_json(self.folder / MANIFEST, self.manifest)
            return
        recorded = self.manifest.get("runtime")
        check_same_decisions(recorded, runtime, f"cache {self.folder}")
        if variant_of(recorded) != runtime["variant"] and runtime["variant"] not in self.manifest.get("also_ran", []):
            self.manifest["also_ran"] = [*self.manifest.get("also_ran", []), runtime["variant"]]

    def missing(self, uuids: Iterable[str]) -> list[str]:
        """The ``uuids`` the cache does not hold yet, in order (reads the cache's uuid column only)."""
        todo = dict.fromkeys(uuids)
        if todo:
            wanted = pa.array(list(todo), type=pa.string())
            for held in held_uuids(self.folder):
                for uuid in held.filter(pc.is_in(held, value_set=wanted)).to_pylist():
                    todo.pop(uuid, None)
        return list(todo)

    def add(self, uuids: list[str], vectors: np.ndarray, made_by: str | None = None) -> None:
        keep = [i for i, u in enumerate(uuids) if u not in self.written]  # a retried batch adds nothing twice
        if not keep:
            return
        label = made_by or node_label()
        names, arrays = self.pending.setdefault(label, ([], []))
        names.extend(uuids[i] for i in keep)
        arrays.append(np.asarray(vectors)[keep])
        self.written.update(uuids[i] for i in keep)
        if len(names) >= self.flush_rows:
            self._flush_label(label)

    def flush(self) -> None:
        for label in list(self.pending):
            self._flush_label(label)

    def _flush_label(self, label: str) -> None:
        names, arrays = self.pending[label]
        if names:
            table = embedding_table(names, np.concatenate(arrays), self.manifest["format_version"])
            write_part(self.folder, table, [label])
            self.parts_written += 1
        del self.pending[label]  # only once written: a failed write leaves the rows pending (see drop_pending)
        if names:
            self._write_manifest()

    def compact(self, target_rows: int = COMPACT_ROWS) -> int:
        """Merge small parts (fewer than ``target_rows`` rows) into parts of up to ``target_rows``; returns
        how many parts were merged away. Big parts are never read or rewritten."""
        self.flush()
        return compact(self.folder, target_rows)  # rows stay the same: parts never overlap

    def _write_manifest(self) -> None:
        self.manifest["rows"] = self.rows
        self.manifest["updated_at"] = _now()
        write_json(self.folder / MANIFEST, self.manifest)


def _acquire(folder: Path) -> filelock.BaseFileLock:
    lock = filelock.FileLock(folder / LOCK, timeout=0, fallback_to_soft=False)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise CacheLocked(f"cache {folder} is being written by another process (it holds {folder / LOCK}); "
                          "wait for that run to finish, one writer per cache") from None
    return lock


def write_part(folder: Path, table: pa.Table, made_by: list[str], hidden: bool = False) -> Path:
    """Write one immutable part atomically; ``hidden`` parts (``_part-...``) are invisible to readers."""
    info = {"made_by": sorted(set(made_by)), "written_by": node_label(), "written_at": _now()}
    table = table.replace_schema_metadata({PART_META: json.dumps(info).encode()})
    stamp = time.time_ns()
    while (folder / f"part-{stamp:020d}.parquet").exists() or (folder / f"_part-{stamp:020d}.parquet").exists():
        stamp += 1
    path = folder / f"{'_' if hidden else ''}part-{stamp:020d}.parquet"
    # No dictionary, no min/max statistics and no compression for the vectors: all three cost more than they
    # ever save (snappy shrinks unit float32 embeddings by ~4% and makes every read decompress them). Parts
    # written earlier with snappy vectors read the same: the codec is recorded per column chunk.
    write_parquet(table, path, use_dictionary=["uuid"], write_statistics=["uuid"],
                  compression={"uuid": "snappy", "embedding": "none"})
    return path


# --- compaction, recovery and upgrade (all under the writer's lock) ----------------------------------------


def _read_journal(folder: Path) -> dict | None:
    path = folder / JOURNAL
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def replace_parts(folder: Path, sources: list[Path], table: pa.Table | None, made_by: list[str]) -> None:
    """Replace ``sources`` by one part holding ``table`` (None or empty: by nothing), crash-safe."""
    merged = write_part(folder, table, made_by, hidden=True) if table is not None and table.num_rows else None
    write_json(folder / JOURNAL, {"sources": [p.name for p in sources],
                                         "merged": merged.name if merged else None})
    _finish(folder)


def _finish(folder: Path) -> None:
    """Roll a journalled replacement forward: delete its sources, rename the merged part into view."""
    journal = _read_journal(folder)
    for name in journal["sources"]:
        (folder / name).unlink(missing_ok=True)
    merged = journal.get("merged")
    if merged and (folder / merged).exists():
        os.replace(folder / merged, folder / merged.lstrip("_"))
    (folder / JOURNAL).unlink()


def recover(folder: Path) -> None:
    """Finish a compaction killed after its journal was written; remove what a killed writer left behind
    (a hidden merged part without journal, temporary files)."""
    if (folder / JOURNAL).exists():
        _finish(folder)
        print(f"embed: cache {folder}: finished a compaction that was interrupted", file=sys.stderr)
    for orphan in folder.glob("_part-*.parquet"):
        orphan.unlink()
    for temp in folder.glob(".*.tmp"):
        temp.unlink()


def compact(folder: Path, target_rows: int = COMPACT_ROWS) -> int:
    small = [(p, part_rows(p)) for p in part_files(folder)]
    small = [(p, n) for p, n in small if n < target_rows]
    groups, group, rows = [], [], 0
    for path, n in small:
        if group and rows + n > target_rows:
            groups.append(group)
            group, rows = [], 0
        group.append(path)
        rows += n
    groups.append(group)
    merged = 0
    for group in (g for g in groups if len(g) > 1):
        made_by = [label for p in group for label in part_info(p).get("made_by", [])]
        replace_parts(folder, group, pa.concat_tables([pq.read_table(p) for p in group]), made_by)
        merged += len(group)
    return merged


def upgrade(folder: Path, manifest: dict) -> None:
    """Format 1 -> 2: rewrite only the parts holding a uuid that an earlier part already holds."""
    seen: set[str] = set()
    dropped = 0
    for path in part_files(folder):
        uuids = pq.read_table(path, columns=["uuid"]).column("uuid").to_pylist()
        keep = []
        for i, uuid in enumerate(uuids):
            if uuid not in seen:
                seen.add(uuid)
                keep.append(i)
        if len(keep) < len(uuids):
            dropped += len(uuids) - len(keep)
            kept = pq.read_table(path).take(pa.array(keep, type=pa.int64()))
            replace_parts(folder, [path], kept, part_info(path).get("made_by", []))
    manifest.update(format_version=LIST_FORMAT, rows=len(seen), updated_at=_now())  # its parts stay lists
    write_json(folder / MANIFEST, manifest)
    print(f"embed: cache {folder} upgraded from format 1 to {LIST_FORMAT} "
          f"({dropped} duplicate rows dropped, {len(seen)} rows kept)", file=sys.stderr)


def write_failures(folder: Path, failures: list[tuple[str, str, str]]) -> Path:
    """The failures of the latest run: uuid, where the image came from, and why it failed."""
    path = Path(folder) / FAILURES
    with atomic_path(path) as temp, open(temp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uuid", "origin", "reason"])
        writer.writerows(failures)
    return path


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
