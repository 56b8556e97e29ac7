"""Writing a cache: its one writer (the lock), appends in immutable parts, the manifest's runtime record."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import filelock
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embed.cache.format import (
    FORMAT_VERSION, LOCK, MANIFEST, embedding_table, host_name, live_parts, part_files, part_rows, read_manifest,
    utc_now, write_part,
)
from embed.cache.maintenance import COMPACT_ROWS, compact, recover, upgrade
from embed.cache.reading import held_uuids
from embed.encoders import EncoderSpec, check_same_encoder
from embed.variants import check_same_decisions, variant_of
from vinted_tagger.files import write_json


class CacheLocked(ValueError):
    """Another process is writing this cache."""


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
        self.lock = lock_cache(self.folder)
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
        created = utc_now()
        manifest = {"format_version": FORMAT_VERSION, "encoder": encoder, "versions": versions,
                    "created_at": created, "updated_at": created, "rows": 0}
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
        label = made_by or host_name()
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
        self.manifest["updated_at"] = utc_now()
        write_json(self.folder / MANIFEST, self.manifest)


def lock_cache(folder: Path) -> filelock.BaseFileLock:
    lock = filelock.FileLock(folder / LOCK, timeout=0, fallback_to_soft=False)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise CacheLocked(f"cache {folder} is being written by another process (it holds {folder / LOCK}); "
                          "wait for that run to finish, one writer per cache") from None
    return lock


def compact_cache(folder: str | Path) -> int:
    """``embed --compact``: merge the cache's small parts; returns how many parts were merged away."""
    manifest = read_manifest(Path(folder))
    with CacheWriter(folder, EncoderSpec.from_dict(manifest["encoder"]), manifest.get("versions", {})) as writer:
        return writer.compact()
