"""The embedding cache: a folder of Parquet parts (``uuid``, fixed-size float32 ``embedding``) + a manifest.

The folder is a plain Parquet dataset: ``pandas.read_parquet(CACHE)`` reads it, because the manifest
(``_manifest.json``) and failures list (``_failures.csv``) start with an underscore, which Parquet readers
skip. Every file is written to a temporary name and renamed, so a killed run leaves only whole parts and
the next run resumes from them. A cache belongs to one encoder (name + weight checksum): adding another
encoder's embeddings, or reading it with heads trained on another encoder, is refused.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embed.encoders import EncoderSpec, check_same_decisions, variant_of

MANIFEST = "_manifest.json"
FAILURES = "_failures.csv"
FORMAT_VERSION = 1


class EncoderMismatch(ValueError):
    """Embeddings from one encoder met a cache or model made with another."""


def check_same_encoder(expected: dict, found: dict, what: str) -> None:
    """Refuse to mix embeddings: encoder name, weight checksum and the embedding's layout must all match."""
    if (expected.get("name"), expected.get("sha256")) != (found.get("name"), found.get("sha256")):
        raise EncoderMismatch(
            f"{what} was made with encoder {found.get('name')!r} (weights {str(found.get('sha256'))[:12]}), "
            f"not {expected.get('name')!r} (weights {str(expected.get('sha256'))[:12]}); "
            "re-embed the images with the matching encoder"
        )
    # Same weights, other pooling (an older release of the same encoder): the vectors mean other things.
    if (expected.get("dim"), expected.get("pooling")) != (found.get("dim"), found.get("pooling")):
        raise EncoderMismatch(
            f"{what} was made with another embedding layout of encoder {found.get('name')!r} "
            f"(dim {found.get('dim')}: {found.get('pooling')}), not dim {expected.get('dim')}: "
            f"{expected.get('pooling')}; re-embed the images into a new cache"
        )


def cache_runtimes(manifest: dict) -> list[dict]:
    """The runtime record of every variant whose embeddings a cache holds (none recorded: ONNX Runtime fp32)."""
    return [manifest.get("runtime") or {}, *({"variant": name} for name in manifest.get("also_ran", []))]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with _removed_on_error(temp):
        temp.write_bytes(data)
        os.replace(temp, path)


def atomic_write_json(path: Path, data: dict) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with _removed_on_error(temp):
        pq.write_table(table, temp)
        os.replace(temp, path)


@contextlib.contextmanager
def _removed_on_error(temp: Path):
    """A half-written temporary file (full disk, Ctrl-C) is removed, so it neither fills the disk nor lingers."""
    try:
        yield
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def embedding_table(uuids: list[str], vectors: np.ndarray) -> pa.Table:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    column = pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])
    return pa.table({"uuid": pa.array(uuids, type=pa.string()), "embedding": column})


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


def part_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("part-*.parquet"))


def read_table(folder: Path, columns: list[str] | None = None) -> pa.Table:
    parts = part_files(folder)
    if not parts:
        return embedding_table([], np.zeros((0, 1), np.float32)).select(columns or ["uuid", "embedding"])
    table = pa.concat_tables([pq.read_table(p, columns=columns) for p in parts])
    # A run killed between writing a compacted part and deleting its sources leaves duplicates: keep the first.
    uuids = table.column("uuid").to_numpy(zero_copy_only=False)
    _, first = np.unique(uuids, return_index=True)
    if len(first) < len(uuids):
        table = table.take(np.sort(first))
    return table


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{folder} is not an embedding cache (no {MANIFEST}); build it with `embed`")
    return json.loads(path.read_text())


def read_cache(folder: str | Path) -> Embeddings:
    folder = Path(folder)
    manifest = read_manifest(folder)
    table = read_table(folder)
    dim = manifest["encoder"]["dim"]
    flat = table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    vectors = np.asarray(flat, dtype=np.float32).reshape(-1, dim)
    return Embeddings(manifest, table.column("uuid").to_numpy(zero_copy_only=False).astype(str), vectors)


class CacheWriter:
    """Appends embeddings to a cache folder in whole, atomically written parts."""

    def __init__(self, folder: str | Path, spec: EncoderSpec, versions: dict, flush_rows: int = 1024,
                 runtime: dict | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.flush_rows = flush_rows
        self.pending_uuids: list[str] = []
        self.pending: list[np.ndarray] = []
        self.manifest = self._open_manifest(spec, versions)
        self._record_runtime(runtime)
        self.known = set(read_table(self.folder, columns=["uuid"]).column("uuid").to_pylist())

    def _open_manifest(self, spec: EncoderSpec, versions: dict) -> dict:
        encoder = spec.to_dict()
        if (self.folder / MANIFEST).exists():
            manifest = read_manifest(self.folder)
            check_same_encoder(encoder, manifest["encoder"], f"cache {self.folder}")
            return manifest
        if part_files(self.folder):
            raise ValueError(f"{self.folder} holds Parquet parts but no {MANIFEST}; refusing to guess their encoder")
        now = _now()
        manifest = {
            "format_version": FORMAT_VERSION,
            "encoder": encoder,
            "versions": versions,
            "created_at": now,
            "updated_at": now,
            "rows": 0,
        }
        atomic_write_json(self.folder / MANIFEST, manifest)
        return manifest

    def _record_runtime(self, runtime: dict | None) -> None:
        """The runtime record (embed.runtime.Encoder.record) of what fills the cache; another variant may add
        rows only if it gives the same decisions, and is then listed under ``also_ran``."""
        if runtime is None:
            return
        if "runtime" not in self.manifest and self.manifest["rows"] == 0:
            self.manifest["runtime"] = runtime
            atomic_write_json(self.folder / MANIFEST, self.manifest)
            return
        recorded = self.manifest.get("runtime")
        check_same_decisions(recorded, runtime, f"cache {self.folder}")
        if variant_of(recorded) != runtime["variant"] and runtime["variant"] not in self.manifest.get("also_ran", []):
            self.manifest["also_ran"] = [*self.manifest.get("also_ran", []), runtime["variant"]]

    def add(self, uuids: list[str], vectors: np.ndarray) -> None:
        self.pending_uuids.extend(uuids)
        self.pending.append(vectors)
        if len(self.pending_uuids) >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        if not self.pending_uuids:
            return
        table = embedding_table(self.pending_uuids, np.concatenate(self.pending))
        name = f"part-{time.time_ns():020d}.parquet"
        write_parquet_atomic(table, self.folder / name)
        self.known.update(self.pending_uuids)
        self.pending_uuids, self.pending = [], []
        self._write_manifest()

    def compact(self) -> None:
        """Merge all parts into one, so that many resumed runs do not leave many small files."""
        parts = part_files(self.folder)
        if len(parts) <= 1:
            return
        write_parquet_atomic(read_table(self.folder), self.folder / f"part-{time.time_ns():020d}.parquet")
        for part in parts:
            part.unlink()

    def _write_manifest(self) -> None:
        self.manifest["rows"] = len(self.known)
        self.manifest["updated_at"] = _now()
        atomic_write_json(self.folder / MANIFEST, self.manifest)


def write_failures(folder: Path, failures: list[tuple[str, str, str]]) -> Path:
    """The failures of the latest run: uuid, where the image came from, and why it failed."""
    path = Path(folder) / FAILURES
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uuid", "origin", "reason"])
        writer.writerows(failures)
    os.replace(temp, path)
    return path


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
