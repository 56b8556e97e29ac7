"""Reading a cache: its rows in batches (each uuid once, a few batches in memory), the uuids it holds, or
the whole cache in memory (``read_cache``)."""

from __future__ import annotations

import functools
import itertools
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from embed.cache.format import LIST_FORMAT, embedding_table, live_parts, read_manifest, vectors_of
from vinted_tagger.read_ahead import read_ahead


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


def iter_batches(folder: str | Path, columns: list[str] | None = None, uuids: Iterable[str] | None = None,
                 batch_rows: int = 4096, readers: int = 1) -> Iterator[pa.RecordBatch]:
    """The cache's rows, part by part in batches of at most ``batch_rows`` (restricted to ``uuids``),
    each uuid once. Memory holds a few batches (``read_ahead``), whatever the cache's size (format 1: plus a
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
        for batch in read_ahead(readings, readers) if readers > 1 else itertools.chain.from_iterable(
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
    uuids against. One set look-up per group, not per part, and plain single-threaded column reads, which
    are quicker than a filtered scan of a cache of many small parts (bench/scale_bench.py times appends)."""
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
    # Memory-mapped: binary vectors go from the page cache to the batch without a read() copy;
    # pre_buffer: each column chunk in one request.
    # Closed once read, not left to the garbage collector: a mapped part's pages count as the reader's memory.
    with pq.ParquetFile(path, memory_map=True, pre_buffer=True) as parquet:
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=needed):
            if wanted is not None:
                batch = batch.filter(pc.is_in(batch.column("uuid"), value_set=wanted))
            if batch.num_rows:
                yield batch


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
