"""Where the images are encoded: one module per engine, ``embed --engine NAME`` runs ``embed.engines.NAME``.

An engine is a module of this package with a function ``run(job: EmbedJob, choice: EngineChoice)``: it
turns ``job.todo`` into vectors with ``embed.image_vectors`` and reports every image to the job (``encoded``
or ``failed``). It imports neither another engine nor the driver (``embed.pipeline``), which lists the
sources, skips what the cache holds, opens the cache writer and hands the rest to the engine chosen. A new
engine is one new module here.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from embed.cache import CacheWriter
from embed.runtime import BATCH_SIZE, Encoder
from embed.sources import ImageRef
from embed.summary import EmbedSummary, record_encoded, record_failure

ENGINES = tuple(sorted(module.name for module in pkgutil.iter_modules(__path__) if not module.name.startswith("_")))


@dataclass(frozen=True)
class EngineChoice:
    """Which engine runs, and the options only some engines read."""

    name: str = "local"
    address: str | None = None  # ray: the cluster to join (default: a local one)
    workers: int | None = None  # ray: encoder actors (default: the cluster's CPUs / threads)


@dataclass
class EmbedJob:
    """The images an engine encodes, and where it reports each one."""

    encoder: Encoder  # the driver's session: its spec and variant are what the cache records
    todo: list[ImageRef]
    writer: CacheWriter
    summary: EmbedSummary
    bar: object  # the run's tqdm progress bar, counting images
    batch_size: int = BATCH_SIZE
    threads: int | None = None  # encoder threads asked for (None: the engine's default)

    def encoded(self, uuids: list[str], vectors: np.ndarray, made_by: str | None = None) -> None:
        record_encoded(self.writer, self.summary, self.bar, uuids, vectors, made_by)

    def failed(self, uuid: str, origin: str, reason: str) -> None:
        record_failure(self.summary, self.bar, uuid, origin, reason)


def engine_runner(name: str) -> Callable[[EmbedJob, EngineChoice], None]:
    """The ``run`` function of the engine called ``name``."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; valid engines: {', '.join(ENGINES)}")
    return importlib.import_module(f"{__name__}.{name}").run
