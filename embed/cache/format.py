"""What a cache folder holds on disk: its file names, the manifest, the parts' schema and which parts are live.

The embedding cache is a folder of immutable Parquet parts (``uuid``, ``embedding``) + a manifest.

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
- Compaction (``maintenance.compact``) only merges small parts, one group at a time, crash-safe: the merged part stays
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

import json
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vinted_tagger.files import write_parquet

MANIFEST = "_manifest.json"
LOCK = "_lock"
JOURNAL = "_compaction.json"
FORMAT_VERSION = 3  # what a new cache is written in
LIST_FORMAT = 2  # the last format whose embeddings are a fixed-size list of float32
READABLE_FORMATS = (1, LIST_FORMAT, FORMAT_VERSION)
PART_META = b"vinted_tagger"  # Parquet key-value metadata of a part: who made it


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


def read_journal(folder: Path) -> dict | None:
    path = folder / JOURNAL
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def part_files(folder: Path) -> list[Path]:
    """The visible parts, oldest first (what a plain Parquet reader reads)."""
    return sorted(Path(folder).glob("part-*.parquet"))


def live_parts(folder: Path) -> list[Path]:
    """Parts that together hold every row exactly once, even while a compaction is under way."""
    folder = Path(folder)
    journal = read_journal(folder)
    if journal is None:
        return part_files(folder)
    replaced = set(journal["sources"])
    parts = [p for p in part_files(folder) if p.name not in replaced]
    merged = journal.get("merged")
    if merged and (folder / merged).exists():
        parts.append(folder / merged)
    return sorted(parts, key=lambda p: p.name.lstrip("_"))


def part_rows(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows


def part_info(path: Path) -> dict:
    """Who made a part: ``made_by`` (node labels of the encoders), ``written_by`` (host) and ``rows``."""
    metadata = pq.read_schema(path).metadata or {}
    info = json.loads(metadata[PART_META]) if PART_META in metadata else {}
    return {"rows": part_rows(path), **info}


def write_part(folder: Path, table: pa.Table, made_by: list[str], hidden: bool = False) -> Path:
    """Write one immutable part atomically; ``hidden`` parts (``_part-...``) are invisible to readers."""
    info = {"made_by": sorted(set(made_by)), "written_by": host_name(), "written_at": utc_now()}
    table = table.replace_schema_metadata({PART_META: json.dumps(info).encode()})
    stamp = time.time_ns()
    while (folder / f"part-{stamp:020d}.parquet").exists() or (folder / f"_part-{stamp:020d}.parquet").exists():
        stamp += 1
    path = folder / f"{'_' if hidden else ''}part-{stamp:020d}.parquet"
    # No dictionary, no min/max statistics and no compression for the vectors: unit float32 embeddings barely
    # compress, and every read would have to decompress them. Parts written earlier with snappy vectors read
    # the same: the codec is recorded per column chunk.
    write_parquet(table, path, use_dictionary=["uuid"], write_statistics=["uuid"],
                  compression={"uuid": "snappy", "embedding": "none"})
    return path


def host_name() -> str:
    """Where this process runs, for part metadata: the host name (an engine may name the node that encoded the
    rows instead)."""
    return socket.gethostname()


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
