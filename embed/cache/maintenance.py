"""Keeping a cache whole (all under its writer's lock): compaction of small parts, recovery of a compaction
that was killed (the journal), and the format-1 upgrade."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from embed.cache.format import (
    JOURNAL, LIST_FORMAT, MANIFEST, part_files, part_info, part_rows, read_journal, utc_now, write_part,
)
from vinted_tagger.files import write_json

COMPACT_ROWS = 8192  # parts below this many rows are "small"; merged parts hold up to this many


def replace_parts(folder: Path, sources: list[Path], table: pa.Table | None, made_by: list[str]) -> None:
    """Replace ``sources`` by one part holding ``table`` (None or empty: by nothing), crash-safe."""
    merged = write_part(folder, table, made_by, hidden=True) if table is not None and table.num_rows else None
    write_json(folder / JOURNAL, {"sources": [p.name for p in sources], "merged": merged.name if merged else None})
    roll_forward(folder)


def roll_forward(folder: Path) -> None:
    """Roll a journalled replacement forward: delete its sources, rename the merged part into view."""
    journal = read_journal(folder)
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
        roll_forward(folder)
        print(f"embed: cache {folder}: finished a compaction that was interrupted", file=sys.stderr)
    for orphan in folder.glob("_part-*.parquet"):
        orphan.unlink()
    for temp in folder.glob(".*.tmp"):
        temp.unlink()


def compact(folder: Path, target_rows: int = COMPACT_ROWS) -> int:
    """Merge the parts of fewer than ``target_rows`` rows, in order, into parts of up to ``target_rows``;
    returns how many parts were merged away."""
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
    manifest.update(format_version=LIST_FORMAT, rows=len(seen), updated_at=utc_now())  # its parts stay lists
    write_json(folder / MANIFEST, manifest)
    print(f"embed: cache {folder} upgraded from format 1 to {LIST_FORMAT} "
          f"({dropped} duplicate rows dropped, {len(seen)} rows kept)", file=sys.stderr)
