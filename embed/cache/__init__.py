"""The embedding cache, one question per module:

- ``format``: what a cache folder holds on disk (file names, manifest, the parts' schema, which parts are live);
- ``reading``: its rows in batches, or the whole cache in memory;
- ``writing``: its one writer, appending immutable parts;
- ``maintenance``: compaction, recovery of a killed compaction, the format-1 upgrade.

The names callers use are importable from ``embed.cache`` itself.
"""

from embed.cache.format import (
    FORMAT_VERSION, JOURNAL, LIST_FORMAT, LOCK, MANIFEST, READABLE_FORMATS, cache_runtimes, embedding_table,
    live_parts, part_files, part_info, part_rows, read_manifest, vectors_of,
)
from embed.cache.maintenance import COMPACT_ROWS
from embed.cache.reading import Embeddings, held_uuids, iter_batches, read_cache, read_table
from embed.cache.writing import CacheLocked, CacheWriter, compact_cache

__all__ = [
    "COMPACT_ROWS", "FORMAT_VERSION", "JOURNAL", "LIST_FORMAT", "LOCK", "MANIFEST", "READABLE_FORMATS",
    "CacheLocked", "CacheWriter", "Embeddings", "cache_runtimes", "compact_cache", "embedding_table",
    "held_uuids", "iter_batches", "live_parts", "part_files", "part_info", "part_rows", "read_cache",
    "read_manifest", "read_table", "vectors_of",
]
