"""Atomic file writes (readers see the old file or the new one, never half of one), file checksums, and whether an
input file is the Parquet file a command needs."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from vinted_tagger.errors import UserError


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


PARQUET_MAGIC = b"PAR1"
OTHER_FORMATS = {".csv": "CSV", ".tsv": "TSV", ".txt": "text", ".json": "JSON", ".jsonl": "JSON lines",
                 ".xlsx": "Excel", ".xls": "Excel", ".feather": "Feather", ".pkl": "pickle", ".zip": "zip"}


def check_parquet(path: str, what: str) -> None:
    """``path`` exists and is a Parquet file (or a folder of them), by its first bytes: a CSV is named as one
    here, before pyarrow's "magic bytes" message could reach the user."""
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if file.is_dir():
        return
    with open(file, "rb") as handle:
        head = handle.read(len(PARQUET_MAGIC))
    if head != PARQUET_MAGIC:
        raise UserError(f"{what} {path} must be Parquet (got {_format_of(file, head)})")


def _format_of(file: Path, head: bytes) -> str:
    if file.suffix.lower() in OTHER_FORMATS:
        return OTHER_FORMATS[file.suffix.lower()]
    if head[:1] in (b"{", b"["):
        return "JSON"
    if not head:
        return "an empty file"
    with open(file, "rb") as handle:
        start = handle.read(4096)
    return "CSV" if b"," in start else "a file that is not Parquet"
