"""Micro-batching: images from concurrent requests share encoder calls.

Each image is decoded in a thread pool (off the event loop), then queued. One asyncio task takes what is
queued (up to ``max_batch``), waits a short window for images that are still being decoded (never when
none are, so a lone request pays no wait), and hands the batch to an encoder worker thread. While the
workers are busy, new images pile up and become the next batch, so batches grow with load. The encoder runs
a batch of one on its low-latency path and a larger one on its throughput path (embed.runtime's runners), so
a lone request stays fast and a loaded service encodes at the encoder's batch rate; ``max_batch`` and the
window are measured at start-up (service/tuning.py).

``workers`` is how many batches run at once, each on an encoder session of its own.

Admission comes first and is all or nothing: a request's images are counted (and their decode cost, read
from the headers, weighed) before any is decoded, and when they do not all fit, the whole request gets 503
with Retry-After. Images whose decode work (embed.images.DecodeCost.work) is over ``heavy_work`` then wait
in a lane of their own: ``heavy_decodes`` threads at the lowest CPU priority, so decode-heavy uploads neither
take the threads that ordinary photos need nor the CPU time their encoding needs (they use what is idle).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from service.errors import ApiError

log = logging.getLogger("service.batcher")
Item = tuple[np.ndarray, asyncio.Future]


class Batcher:
    def __init__(
        self,
        decode: Callable[[bytes], np.ndarray],
        run_batch: Callable[[np.ndarray], list],
        *,
        max_batch: int,
        window_s: float,
        max_pending: int,
        decode_threads: int,
        workers: int = 1,
        inspect: Callable[[bytes], int] | None = None,
        heavy_work: float = math.inf,
        heavy_decodes: int = 1,
        max_heavy_pending: int = 16,
        on_batch: Callable[[int, float], None] | None = None,
    ):
        self.decode, self.run_batch = decode, run_batch
        self.on_batch = on_batch or (lambda images, seconds: None)  # each encoder call: its images and seconds
        self.inspect = inspect or (lambda data: 0)  # bytes -> decode cost (raises ImageError for a bad header)
        self.max_batch, self.window_s, self.max_pending = max_batch, window_s, max_pending
        self.heavy_work, self.max_heavy_pending = heavy_work, max_heavy_pending
        self.decoding = 0  # ordinary images in the decode pool: worth a short wait, they will arrive soon
        self.pending = 0  # images accepted and not answered yet
        self.heavy_pending = 0  # of which over heavy_work
        self._heavy_lane = asyncio.Semaphore(heavy_decodes)
        self.batches = self.batched_images = 0  # counters, for tests and the benchmark
        self._queue: deque[Item] = deque()
        self._changed = asyncio.Event()
        self._free_workers = asyncio.Semaphore(workers)
        self._running: set[asyncio.Task] = set()
        self._decoders = ThreadPoolExecutor(decode_threads, thread_name_prefix="decode")
        self._heavy_decoders = ThreadPoolExecutor(heavy_decodes, thread_name_prefix="decode-heavy",
                                                  initializer=lowest_priority)
        self._workers = ThreadPoolExecutor(workers, thread_name_prefix="encoder")
        self._task: asyncio.Task | None = None

    @property
    def queued(self) -> int:
        """Images decoded and waiting for an encoder call."""
        return len(self._queue)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    async def stop(self) -> None:
        tasks = [t for t in [self._task, *self._running] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        fail([future for _, future in self._queue], shutting_down())
        self._queue.clear()
        self._decoders.shutdown(wait=False, cancel_futures=True)
        self._heavy_decoders.shutdown(wait=False, cancel_futures=True)
        self._workers.shutdown(wait=False, cancel_futures=True)

    async def predict(self, data: bytes):
        """One image -> its row of ``run_batch`` output; raises ImageError for a bad image, 503 when full."""
        cost = (await self.costs([data]))[0]
        if isinstance(cost, Exception):
            raise cost
        with self.admission([cost]):
            return await self.run_image(data, cost)

    async def costs(self, payloads: list[bytes]) -> list[int | Exception]:
        """Each image's decode cost from its header (or the ImageError that its header gives)."""
        self.check_room(len(payloads))  # a flood is refused before even its headers are read
        return await asyncio.get_running_loop().run_in_executor(self._decoders, self._costs, payloads)

    def _costs(self, payloads: list[bytes]) -> list[int | Exception]:
        out: list[int | Exception] = []
        for data in payloads:
            try:
                out.append(self.inspect(data))
            except ValueError as error:  # ImageError
                out.append(error)
        return out

    def check_room(self, images: int, heavy: int = 0) -> None:
        if self.pending + images > self.max_pending or self.heavy_pending + heavy > self.max_heavy_pending:
            raise overloaded()

    @contextlib.contextmanager
    def admission(self, costs: list[int]):
        """Take all these images or none (503): memory and queueing stay bounded whatever the load."""
        heavy = sum(cost > self.heavy_work for cost in costs)
        self.check_room(len(costs), heavy)
        self.pending += len(costs)
        self.heavy_pending += heavy
        try:
            yield
        finally:
            self.pending -= len(costs)
            self.heavy_pending -= heavy

    async def run_image(self, data: bytes, cost: int = 0):
        """Decode (in the heavy lane when costly) and encode one admitted image."""
        loop = asyncio.get_running_loop()
        heavy = cost > self.heavy_work
        # Only ordinary decodes are worth holding a batch open for: a heavy one arrives much later.
        soon = 0 if heavy else 1
        async with self._heavy_lane if heavy else contextlib.nullcontext():
            self.decoding += soon
            try:
                pool = self._heavy_decoders if heavy else self._decoders
                pixels = await loop.run_in_executor(pool, self.decode, data)
            finally:
                self.decoding -= soon
                self._changed.set()
        future = loop.create_future()
        self._queue.append((pixels, future))
        return await future

    async def _loop(self) -> None:
        while True:
            if not self._queue:
                self._changed.clear()
                await self._changed.wait()
                continue
            await self._free_workers.acquire()
            await self._wait_for_stragglers()
            batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        self._free_workers.release()

    async def _wait_for_stragglers(self) -> None:
        """Hold the batch open up to window_s while images are still being decoded."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.window_s
        while len(self._queue) < self.max_batch and self.decoding > 0:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return

    async def _run(self, batch: list[Item]) -> None:
        futures = [future for _, future in batch]
        started = time.perf_counter()
        try:
            pixels = np.stack([p for p, _ in batch])
            rows = await asyncio.get_running_loop().run_in_executor(self._workers, self.run_batch, pixels)
        except asyncio.CancelledError:
            fail(futures, shutting_down())
            raise
        except Exception as error:  # noqa: BLE001 - the batch's requests get the error, the loop lives on
            log.exception("batch of %d images failed", len(batch))
            fail(futures, error)
            return
        self.batches += 1
        self.batched_images += len(batch)
        self.on_batch(len(batch), time.perf_counter() - started)
        for future, row in zip(futures, rows):
            if not future.done():
                future.set_result(row)


def lowest_priority() -> None:
    """Nice the calling thread to 19 (Linux applies it per thread); elsewhere, leave it as it is."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        pass


def overloaded() -> ApiError:
    return ApiError(503, "overloaded", "too many images in flight; retry the whole request shortly",
                    {"Retry-After": "1"})


def shutting_down() -> ApiError:
    return ApiError(503, "shutting_down", "the service is shutting down")


def fail(futures: list[asyncio.Future], error: BaseException) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(error)
