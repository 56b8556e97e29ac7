"""The driver of ``embed``: which images a run encodes, with which encoder, on which engine, into which cache.

It lists the sources, loads the encoder, opens the cache's one writer and skips the uuids the cache already
holds before any image is read (so an interrupted run resumes where the last whole part ended), then hands
the rest to the engine chosen (``embed/engines/``). Whatever happens, the encoded rows are written and the
run's failures listed (``embed/summary.py``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from embed.cache import MANIFEST, CacheWriter, read_manifest
from embed.variants import check_same_decisions
from embed.engines import EmbedJob, EngineChoice, engine_runner
from embed.output import OutputError, check_folder, os_reason
from embed.runtime import BATCH_SIZE, Encoder, versions
from embed.sources import ImageRef, Skipped, list_sources, select
from embed.summary import EmbedSummary, save_failures

DEFAULT_ENCODER = "efficientnet-lite2-clothing"


@dataclass(frozen=True)
class EncoderChoice:
    """Which encoder embeds the images, and how it runs.

    ``encoder`` is a name from the encoder table, or an Encoder already loaded (a model's own: then
    ``threads``, ``runtime``, ``precision`` and ``decoder`` are its own). ``runtime``/``precision`` name a
    variant of ``embed.encoders.VARIANTS`` or ``auto``: the fastest this machine runs that keeps the decisions
    of the rows already in the cache, or of ``agree_with`` (see ``embed_sources``).
    """

    encoder: str | Encoder = DEFAULT_ENCODER
    runtime: str = "auto"
    precision: str = "auto"
    decoder: str | None = None
    threads: int | None = None
    batch_size: int = BATCH_SIZE  # images per encoder call (a static shape)


def embed_sources(sources: list[str | Path], out: str | Path, encoder: str | Encoder | EncoderChoice = DEFAULT_ENCODER,
                  ids: Iterable[str] | None = None, engine: str | EngineChoice = "local", progress: bool = True,
                  agree_with: dict | None = None, key: str = "stem") -> EmbedSummary:
    """Embed every image of ``sources`` (restricted to ``ids``) that the cache ``out`` does not hold yet.

    ``encoder`` and ``engine`` are a name or a full choice (``EncoderChoice``, ``EngineChoice``); both engines
    write the same cache. ``agree_with`` is the runtime record of the heads that will read a new cache.
    ``key``: an image's uuid, its file stem or its path in its source (embed.sources.KEYS).
    """
    encoder = encoder if isinstance(encoder, EncoderChoice) else EncoderChoice(encoder)
    engine = engine if isinstance(engine, EngineChoice) else EngineChoice(engine)
    run = engine_runner(engine.name)
    start = time.perf_counter()
    listed, ignored = list_sources(sources, key)  # names (and first bytes of suffix-less files): no pixel is read
    check_folder(out, "cache folder")  # before loading the encoder: a wrong --out fails at once
    model = load_encoder(encoder, out, agree_with)
    writer = CacheWriter(out, model.spec, versions(), runtime=model.record)
    try:
        todo, summary = plan_run(writer, out, listed, ignored, ids)
        bar = tqdm(total=len(todo), unit="img", desc="embed", disable=not progress, file=sys.stderr)
        job = EmbedJob(model, todo, writer, summary, bar, encoder.batch_size, encoder.threads)
        try:
            run_and_save(run, job, engine, out)
        finally:
            bar.close()
            summary.seconds = time.perf_counter() - start
    finally:
        writer.release()  # the lock: another writer may open the cache now
    return summary


def load_encoder(choice: EncoderChoice, out: str | Path, agree_with: dict | None) -> Encoder:
    """The encoder session of ``choice``, refused when it would not keep the decisions of the cache's rows."""
    if (Path(out) / MANIFEST).exists():
        agree_with = read_manifest(Path(out)).get("runtime", {})
    if not isinstance(choice.encoder, Encoder):
        # Static shapes: the batch size only; the short last batch is padded.
        return Encoder.load(choice.encoder, choice.threads, choice.runtime, choice.precision, (choice.batch_size,),
                            agree_with, choice.decoder)
    if agree_with is not None:
        check_same_decisions(agree_with, choice.encoder.record, f"cache {out}")
    return choice.encoder


def plan_run(writer: CacheWriter, out: str | Path, listed: list[ImageRef], ignored: list[Skipped],
             ids: Iterable[str] | None) -> tuple[list[ImageRef], EmbedSummary]:
    """The refs to encode (cached uuids are skipped before any read) and the run's summary so far."""
    refs, missing = select(listed, ids)
    wanted = set(writer.missing(ref.uuid for ref in refs))
    todo = [ref for ref in refs if ref.uuid in wanted]
    summary = EmbedSummary(skipped=len(refs) - len(todo), cache=str(out))
    summary.add_listing(missing, ignored)
    return todo, summary


def run_and_save(run: Callable[[EmbedJob, EngineChoice], None], job: EmbedJob, engine: EngineChoice,
                 out: str | Path) -> None:
    """Run the engine; on success or Ctrl-C, write what is encoded and the failures list."""
    try:
        run(job, engine)
    except OSError as error:  # the cache cannot be written (full disk, read-only): keep the finished parts
        raise write_error(out, job.writer, error) from None
    except KeyboardInterrupt:  # Ctrl-C: keep every batch encoded so far
        save_run(out, job.writer, job.summary)
        raise
    save_run(out, job.writer, job.summary)


def save_run(out: str | Path, writer: CacheWriter, summary: EmbedSummary) -> None:
    """Write what is encoded but not yet in a part, and the failures list. Nothing is compacted: parts are
    immutable and an append never rewrites the cache (``embed --compact`` merges small parts on request)."""
    try:
        writer.flush()
    except OSError as error:
        raise write_error(out, writer, error) from None
    save_failures(out, summary)


def write_error(out: str | Path, writer: CacheWriter, error: OSError) -> OutputError:
    lost = writer.drop_pending()  # never written twice, never half-written
    return OutputError(
        f"cannot write to cache {out}: {os_reason(error)}; the cache keeps {writer.rows} images in "
        f"whole parts ({lost} encoded images were not saved); free space and run again to resume"
    )
