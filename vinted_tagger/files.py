"""Atomic file writes (readers see the old file or the new one, never half of one) and file checksums."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to. When the block ends it is flushed to disk and renamed over
    ``path``; when the block fails (an error, a full disk, Ctrl-C) it is removed, so it neither fills the disk
    nor lingers. Its name starts with a dot and ends with ``.tmp``: Parquet readers skip it, cleanups find it."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield temp
        with open(temp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as temp:
        temp.write_bytes(data)


def write_json(path: str | Path, data: dict) -> None:
    """``data`` as indented JSON with sorted keys (stable diffs), atomically."""
    write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def write_parquet(table, path: str | Path, **options) -> None:
    """A pyarrow Table as a Parquet file, atomically (``options``: pyarrow.parquet.write_table's)."""
    import pyarrow.parquet as pq

    with atomic_path(path) as temp:
        pq.write_table(table, temp, **options)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
