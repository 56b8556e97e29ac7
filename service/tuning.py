"""The batcher's limits, measured on this machine at start-up rather than tuned by hand on one CPU.

With the model's encoder loaded and warm, ``measure`` times one image alone (the low-latency path), then the
batch sizes worth choosing between:

- with lanes (the default), every lane encoding batches of 1, 2, 4 and 8 at once, as a loaded service does,
  the sizes in turn round after round (the fastest of each kept).
  A lane's batch is what every image in it waits for, so the batch limit is a latency budget: the largest size
  that, like every smaller one, takes a busy lane at most ``BATCH_TIME_BUDGET`` times its batch of one, and
  costs at least ``MIN_SAVING`` less per image than the size before (batching that saves nothing only adds
  waiting). A batch then finishes within two batches of one on a busy lane, and batches grow past two only
  where four images encode in the time of two alone (a wide accelerator). A threshold on the saving per image
  alone flipped between 2 and 4 on a CPU whose saving sat near it, and 4 served concurrency 8 worse
  (docs/service.md, "Batches under load").
- without lanes (whole batches on sessions of their own), batches of one, two and four times what fills the
  encoder's throughput streams; the limit is the smallest within ``GOOD_ENOUGH`` of the best per-image time.

The batch window is one image's encoding time: holding a batch open longer for images still being decoded
would cost a lone straggler more than encoding it alone. A setting given explicitly wins.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("service.tuning")
GOOD_ENOUGH = 1.05  # a batch within 5% of the best per-image time is as good
BATCH_TIME_BUDGET = 2.0  # with lanes: a batch may take as long as this many batches of one
MIN_SAVING = 0.05  # with lanes: a bigger batch must cost 5% less per image than the size before
REPEATS = 5  # rounds over the sizes (each size's fastest is kept): under a second at start-up on a small CPU
LANE_BATCHES = (1, 2, 4, 8)  # from 1: the budget counts in the batch of one's time


@dataclass(frozen=True)
class Tuning:
    max_batch: int
    window_s: float
    batch1_ms: float  # the encoder's one-image time (fastest run)
    image_ms: dict[int, float]  # batch size -> encoder time per image (fastest run)
    lanes: int = 0  # workers each on a lane of the encoder (0: whole batches on sessions of their own)


def measure(encoder, full: int, max_batch: int = 0, window_ms: float = -1.0, lanes: int = 0) -> Tuning:
    """Time ``encoder`` (embed.runtime.Encoder) and choose what ``max_batch`` / ``window_ms`` leave to
    measurement (0 / negative: auto). ``full``: the smallest batch that fills every stream (0: none);
    ``lanes``: how many lanes the batcher's workers run at once (0: none, whole batches)."""
    size = encoder.spec.input_size
    pixels = np.random.default_rng(0).integers(0, 256, (4 * max(full, 4, *LANE_BATCHES), size, size, 3), np.uint8)
    batch1_ms = timed(encoder.encode, pixels[:1], REPEATS * 3)
    image_ms = {}
    if max_batch == 0:
        sizes = LANE_BATCHES if lanes > 1 else sorted({max(full, 4) * k for k in (1, 2, 4)})
        run = (lambda n: on_lanes(encoder, pixels[:n], lanes)) if lanes > 1 else (
            lambda n: timed(encoder.encode, pixels[:n], 1) / n)
        # Round after round, each size in turn, the fastest of each kept: when the machine's speed drifts
        # during the timing, every size sees the same drift (sizes timed one after the other did not, and the
        # choice flipped between runs).
        for _ in range(REPEATS):
            for n in sizes:
                image_ms[n] = min(image_ms.get(n, float("inf")), run(n))
        max_batch = latency_limit(image_ms) if lanes > 1 else good_enough(image_ms)
    window_s = batch1_ms / 1000 if window_ms < 0 else window_ms / 1000
    tuning = Tuning(max_batch, window_s, round(batch1_ms, 3), {k: round(v, 3) for k, v in image_ms.items()}, lanes)
    log.info("batching: one image %.2f ms; per image at batch %s ms (%d lanes); max batch %d, window %.2f ms",
             batch1_ms, tuning.image_ms or "(set)", lanes, max_batch, window_s * 1000)
    return tuning


def good_enough(image_ms: dict[int, float]) -> int:
    best = min(image_ms.values())
    return min(n for n, ms in image_ms.items() if ms <= best * GOOD_ENOUGH)


def latency_limit(image_ms: dict[int, float]) -> int:
    """The largest batch size that, like every smaller one, takes at most BATCH_TIME_BUDGET times the batch of
    one and saves MIN_SAVING per image over the size before (``image_ms``: batch size -> time per image on a
    busy lane, batch 1 included)."""
    sizes = sorted(image_ms)
    limit = sizes[0]
    for smaller, n in zip(sizes, sizes[1:]):
        if n * image_ms[n] > BATCH_TIME_BUDGET * image_ms[1] or image_ms[n] > image_ms[smaller] * (1 - MIN_SAVING):
            break
        limit = n
    return limit


def on_lanes(encoder, pixels: np.ndarray, lanes: int) -> float:
    """Milliseconds per image with every lane encoding ``pixels`` at once, timed from when all lanes start
    (starting threads is not the encoder's time)."""
    barrier = threading.Barrier(lanes + 1)

    def lane(k: int) -> None:
        barrier.wait()
        encoder.encode_on(k, pixels)

    threads = [threading.Thread(target=lane, args=(k,)) for k in range(lanes)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return (time.perf_counter() - started) * 1000 / (lanes * len(pixels))


def timed(encode, pixels: np.ndarray, repeats: int) -> float:
    """Milliseconds of the fastest of ``repeats`` runs of ``encode(pixels)``: what the encoder costs, not what
    other work on a shared machine added to some runs."""
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        encode(pixels)
        runs.append((time.perf_counter() - started) * 1000)
    return min(runs)
