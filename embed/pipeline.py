"""The reader -> mapper -> writer loop that fills an embedding cache.

Reader threads read and decode the next images (Pillow and zlib release the GIL) while the main thread runs
the encoder (ONNX Runtime or OpenVINO, which release it too) on whole batches, and the cache writer appends
atomic Parquet parts. Uuids already in the cache are skipped before anything is read, so an interrupted run
resumes where the last whole part ended. With ``engine="ray"`` the same listing, skipping and writing run
here, and decode + encode run on a Ray cluster.
"""

from __future__ import annotations

import contextlib
import sys
import time
import zipfile
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from embed.cache import MANIFEST, CacheWriter, read_manifest, write_failures
from embed.variants import check_same_decisions
from embed.images import ImageError, load_pixels
from embed.output import OutputError, check_folder, describe
from embed.runtime import Encoder, versions
from embed.sources import ImageRef, list_sources, select

READER_THREADS = 2
MISSING_REASON = "no image with this uuid in the sources"


@dataclass
class EmbedSummary:
    encoded: int = 0
    skipped: int = 0
    failed: int = 0
    ignored: int = 0  # files that are not images, duplicate uuids, unreadable folders: listed in the failures
    seconds: float = 0.0
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (uuid, origin, reason)
    missing: list[str] = field(default_factory=list)  # uuids asked for with --ids that have no image
    cache: str = ""

    @property
    def images_per_s(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"embed: {self.encoded} encoded, {self.skipped} skipped (already cached), {self.failed} failed, "
            f"{len(self.missing)} missing, {self.ignored} ignored (not images, duplicate uuids), "
            f"{self.seconds:.1f} s, {self.images_per_s:.1f} img/s -> {self.cache}"
        )


def _read(ref: ImageRef, size: int, decoder: str | None = None) -> np.ndarray | str:
    try:
        return load_pixels(ref.read(), size, decoder=decoder)
    except ImageError as error:
        return str(error)
    except (OSError, zipfile.BadZipFile, zlib.error, EOFError) as error:  # unreadable file or bad zip member
        return f"cannot read: {error}"


def decoded(refs: list[ImageRef], size: int, workers: int, ahead: int, decoder: str | None = None,
            pool: ThreadPoolExecutor | None = None) -> Iterator[tuple[ImageRef, object]]:
    """(ref, pixels or error string), in order, decoding up to ``ahead`` images in advance, in ``pool`` (a
    caller's long-lived one) or in ``workers`` threads of a pool made for this call."""
    with contextlib.nullcontext(pool) if pool else ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
        queue: deque[tuple[ImageRef, Future]] = deque()
        items = iter(refs)
        for ref in items:
            queue.append((ref, pool.submit(_read, ref, size, decoder)))
            if len(queue) >= ahead:
                break
        while queue:
            ref, future = queue.popleft()
            next_ref = next(items, None)
            if next_ref is not None:
                queue.append((next_ref, pool.submit(_read, next_ref, size, decoder)))
            yield ref, future.result()


ENGINES = ("local", "ray")
BATCH_SIZE = 16  # images per encoder call (a static shape)


def embed_sources(
    sources: list[str | Path],
    out: str | Path,
    encoder: str | Encoder = "efficientnet-lite2",
    ids: Iterable[str] | None = None,
    batch_size: int = BATCH_SIZE,
    progress: bool = True,
    threads: int | None = None,
    runtime: str = "auto",
    precision: str = "auto",
    decoder: str | None = None,
    agree_with: dict | None = None,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
) -> EmbedSummary:
    """Embed every image of ``sources`` (restricted to ``ids``) that ``out`` does not hold yet.

    ``encoder`` is a name from the encoder table, or an Encoder already loaded (a model's own: then
    ``threads``, ``runtime``, ``precision`` and ``decoder`` are its own). ``runtime``/``precision`` name a
    variant of ``embed.encoders.VARIANTS`` or ``auto`` (the fastest this machine runs that keeps the
    decisions of the rows already in ``out``, or of ``agree_with``: the runtime record of the heads that will
    read a new cache). ``engine`` "local" runs the loop below in this process;
    "ray" runs decode + encode on a Ray cluster (embed/ray_engine.py; ``address`` and ``workers`` are its
    options). Both write the same cache.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; valid engines: {', '.join(ENGINES)}")
    start = time.perf_counter()
    listed, ignored = list_sources(sources)  # milliseconds: no pixel is read
    check_folder(out, "cache folder")  # before loading the encoder: a wrong --out fails in a second
    if (Path(out) / MANIFEST).exists():
        agree_with = read_manifest(Path(out)).get("runtime", {})
    # Static shapes: the batch size only; the short last batch is padded.
    if isinstance(encoder, Encoder):
        model = encoder
        if agree_with is not None:
            check_same_decisions(agree_with, model.record, f"cache {out}")
    else:
        model = Encoder.load(encoder, threads, runtime, precision, (batch_size,), agree_with, decoder)
    writer = CacheWriter(out, model.spec, versions(), runtime=model.record)
    try:
        refs, missing = select(listed, ids)
        wanted = set(writer.missing(ref.uuid for ref in refs))  # cached uuids are skipped before any read
        todo = [ref for ref in refs if ref.uuid in wanted]
        summary = EmbedSummary(skipped=len(refs) - len(todo), missing=missing, cache=str(out), ignored=len(ignored))
        summary.failures = [(u, "", MISSING_REASON) for u in missing] + [(s.uuid, s.origin, s.reason) for s in ignored]
        bar = tqdm(total=len(todo), unit="img", desc="embed", disable=not progress, file=sys.stderr)
        try:
            if engine == "ray":
                from embed.ray_engine import run_on_ray  # Ray is an optional extra

                run_on_ray(model.spec, todo, writer, summary, bar, batch_size, address, workers, threads)
            else:
                _run(model, todo, writer, summary, bar, batch_size)
        except OSError as error:  # the cache cannot be written (full disk, read-only): keep the finished parts
            raise _write_error(out, writer, error) from None
        except KeyboardInterrupt:  # Ctrl-C: keep every batch encoded so far
            _finish(out, writer, summary)
            raise
        finally:
            bar.close()
            summary.seconds = time.perf_counter() - start
        _finish(out, writer, summary)
    finally:
        writer.release()  # the lock: another writer may open the cache now
    return summary


def _finish(out, writer: CacheWriter, summary: EmbedSummary) -> None:
    """Write what is encoded but not yet in a part, and the failures list. Nothing is compacted: parts are
    immutable and an append never rewrites the cache (``embed --compact`` merges small parts on request)."""
    try:
        writer.flush()
    except OSError as error:
        raise _write_error(out, writer, error) from None
    try:
        write_failures(Path(out), summary.failures)
    except OSError as error:
        raise OutputError(f"cannot write the failures list in {out}: {describe(error)}") from None


def _write_error(out, writer: CacheWriter, error: OSError) -> OutputError:
    lost = writer.drop_pending()  # never written twice, never half-written
    return OutputError(
        f"cannot write to cache {out}: {describe(error)}; the cache keeps {writer.rows} images in whole "
        f"parts ({lost} encoded images were not saved); free space and run again to resume"
    )


def compact_cache(out: str | Path) -> int:
    """``embed --compact``: merge the cache's small parts; returns how many parts were merged away."""
    from embed.cache import read_manifest
    from embed.encoders import EncoderSpec

    spec = EncoderSpec.from_dict(read_manifest(Path(out))["encoder"])
    with CacheWriter(out, spec, versions()) as writer:
        return writer.compact()


def record_failure(summary: EmbedSummary, bar, uuid: str, origin: str, reason: str) -> None:
    summary.failed += 1
    summary.failures.append((uuid, origin, reason))
    bar.update(1)


def record_encoded(writer: CacheWriter, summary: EmbedSummary, bar, uuids: list[str], vectors: np.ndarray,
                   made_by: str | None = None) -> None:
    writer.add(uuids, vectors, made_by)
    summary.encoded += len(uuids)
    bar.update(len(uuids))


def _run(model: Encoder, todo, writer: CacheWriter, summary: EmbedSummary, bar, batch_size: int) -> None:
    uuids: list[str] = []
    pixels: list[np.ndarray] = []
    for ref, result in decoded(todo, model.spec.input_size, READER_THREADS, 4 * batch_size, model.decoder):
        if isinstance(result, str):
            record_failure(summary, bar, ref.uuid, ref.origin, result)
        else:
            uuids.append(ref.uuid)
            pixels.append(result)
        if len(pixels) >= batch_size:
            _encode(model, writer, summary, bar, uuids, pixels)
            uuids, pixels = [], []
    if pixels:
        _encode(model, writer, summary, bar, uuids, pixels)


def _encode(model: Encoder, writer: CacheWriter, summary: EmbedSummary, bar, uuids, pixels) -> None:
    record_encoded(writer, summary, bar, uuids, model.encode(np.stack(pixels)))
