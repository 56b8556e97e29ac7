"""The batcher's limits, measured on this machine at start-up rather than tuned by hand on one CPU.

With the model's encoder loaded and warm, ``measure`` times one image alone (the low-latency path) and
batches of one, two and four times what fills the encoder's throughput streams. The batch limit is the
smallest of those batches within ``GOOD_ENOUGH`` of the best per-image time (a bigger batch only adds latency),
and the batch window is one image's encoding time: holding a batch open longer for images still being
decoded would cost a lone straggler more than encoding it alone. A setting given explicitly wins.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("service.tuning")
GOOD_ENOUGH = 1.05  # a batch within 5% of the best per-image time is as good
REPEATS = 3  # timings per size (the fastest is kept): a few hundred ms at start-up on a small CPU


@dataclass(frozen=True)
class Tuning:
    max_batch: int
    window_s: float
    batch1_ms: float  # the encoder's one-image time (fastest run)
    image_ms: dict[int, float]  # batch size -> encoder time per image (fastest run)


def measure(encode, input_size: int, full: int, max_batch: int = 0, window_ms: float = -1.0) -> Tuning:
    """Time ``encode`` (uint8 (n, S, S, 3) -> anything) and choose what ``max_batch`` / ``window_ms`` leave to
    measurement (0 / negative: auto). ``full``: the smallest batch that fills every stream (0: none)."""
    pixels = np.random.default_rng(0).integers(0, 256, (4 * max(full, 4), input_size, input_size, 3), np.uint8)
    batch1_ms = timed(encode, pixels[:1], REPEATS * 3)
    image_ms = {}
    if max_batch == 0:
        for size in sorted({max(full, 4) * k for k in (1, 2, 4)}):
            image_ms[size] = timed(encode, pixels[:size], REPEATS) / size
        best = min(image_ms.values())
        max_batch = min(size for size, ms in image_ms.items() if ms <= best * GOOD_ENOUGH)
    window_s = batch1_ms / 1000 if window_ms < 0 else window_ms / 1000
    tuning = Tuning(max_batch, window_s, round(batch1_ms, 3), {k: round(v, 3) for k, v in image_ms.items()})
    log.info("batching: one image %.2f ms; per image at batch %s ms; max batch %d, window %.2f ms",
             batch1_ms, tuning.image_ms or "(set)", max_batch, window_s * 1000)
    return tuning


def timed(encode, pixels: np.ndarray, repeats: int) -> float:
    """Milliseconds of the fastest of ``repeats`` runs of ``encode(pixels)``: what the encoder costs, not what
    other work on a shared machine added to some runs."""
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        encode(pixels)
        runs.append((time.perf_counter() - started) * 1000)
    return min(runs)
