"""Micro-batching: images from concurrent requests share encoder calls.

A lone image on an idle service is decoded and encoded in one pool call, on the encoder's low-latency path
(every thread on one image): no queue, no batch. Otherwise each image is decoded in a thread pool and put,
by the decoding thread itself, on a queue that ``workers`` encoder threads (lanes) take batches from: a lane
takes what is queued (up to ``max_batch``) the moment its last batch is done, so under load every lane stays
busy and batches grow with the queue, and no event-loop round trip sits between decoding, encoding and the
next batch. Only when every lane is idle (a burst arriving) does a lane first wait a short window for images
still being decoded. With lanes (embed.runtime.Encoder.encode_on) each lane owns one of the encoder's
streams; ``run_batch(pixels, lane)`` gets the lane, or None for a batch of one that runs alone (the
low-latency path). ``max_batch`` and the window are measured at start-up (service/tuning.py).

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
# Uploads this small have their headers read on the event loop: reading a header takes microseconds, bounded
# by the bytes there are, and a thread hop would cost more than the work it moves.
INLINE_HEADERS_BYTES = 256 * 1024


class Batcher:
    def __init__(
        self,
        decode: Callable[[bytes], np.ndarray],
        run_batch: Callable[[np.ndarray, int | None], list],
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
        self.workers = workers
        self.pending = 0  # images accepted and not answered yet (event loop only)
        self.heavy_pending = 0  # of which over heavy_work
        self._heavy_lane = asyncio.Semaphore(heavy_decodes)
        # Shared with the decode and lane threads, under _ready's lock:
        self._ready = threading.Condition()
        self._queue: deque[tuple[np.ndarray, asyncio.Future, asyncio.AbstractEventLoop]] = deque()
        self.decoding = 0  # ordinary images in the decode pool: worth a short wait, they will arrive soon
        self.busy = 0  # lanes encoding a batch
        self.solo = 0  # lone images on the low-latency path
        self.batches = self.batched_images = 0  # counters, for tests and the benchmark
        self._stopping = False
        self._lanes: list[threading.Thread] = []
        self._decoders = ThreadPoolExecutor(decode_threads, thread_name_prefix="decode")
        self._heavy_decoders = ThreadPoolExecutor(heavy_decodes, thread_name_prefix="decode-heavy",
                                                  initializer=lowest_priority)

    @property
    def queued(self) -> int:
        """Images decoded and waiting for an encoder call."""
        return len(self._queue)

    def start(self) -> None:
        self._lanes = [threading.Thread(target=self._lane, args=(k,), name=f"encoder_{k}", daemon=True)
                       for k in range(self.workers)]
        for thread in self._lanes:
            thread.start()

    async def stop(self) -> None:
        with self._ready:
            self._stopping = True
            queued = [(future, loop) for _, future, loop in self._queue]
            self._queue.clear()
            self._ready.notify_all()
        for future, loop in queued:
            deliver(loop, future, shutting_down())
        await asyncio.to_thread(lambda: [thread.join(5.0) for thread in self._lanes])
        # Decodes already submitted still run and answer their requests (503): cancelling them would leave
        # those requests waiting for ever.
        self._decoders.shutdown(wait=False)
        self._heavy_decoders.shutdown(wait=False, cancel_futures=True)

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
        if sum(len(data) for data in payloads) <= INLINE_HEADERS_BYTES:
            return self._costs(payloads)
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
        if self._stopping:
            raise shutting_down()
        if cost > self.heavy_work:
            async with self._heavy_lane:
                pixels = await loop.run_in_executor(self._heavy_decoders, self.decode, data)
            return await self._encoded(pixels, loop)
        with self._ready:  # a lone image on an idle service: every encoder thread on it, at once
            alone = not (self._queue or self.decoding or self.busy or self.solo)
            self.solo += alone
            self.decoding += not alone
        if alone:
            return await self._alone(data, loop)
        future = loop.create_future()
        self._decoders.submit(self._decode_into_queue, data, future, loop)
        return await future

    async def _encoded(self, pixels: np.ndarray, loop: asyncio.AbstractEventLoop):
        future = loop.create_future()
        with self._ready:
            if self._stopping:  # a heavy decode that finished after stop(): no lane reads the queue any more
                raise shutting_down()
            self._queue.append((pixels, future, loop))
            self._ready.notify()
        return await future

    async def _alone(self, data: bytes, loop: asyncio.AbstractEventLoop):
        """Decode and encode in one pool call (one thread hop), on the low-latency path."""
        try:
            row, seconds = await loop.run_in_executor(self._decoders, self._decode_run, data)
        finally:
            with self._ready:  # no notify: a lane waits for the queue, never for a lone image to finish
                self.solo -= 1
        self._count(1, seconds)
        return row

    def _decode_run(self, data: bytes) -> tuple[object, float]:
        pixels = self.decode(data)[None]
        started = time.perf_counter()
        return self.run_batch(pixels, None)[0], time.perf_counter() - started

    def _decode_into_queue(self, data: bytes, future: asyncio.Future, loop: asyncio.AbstractEventLoop) -> None:
        """In a decode thread: the image's pixels go straight onto the lanes' queue (its error to its request)."""
        try:
            pixels = self.decode(data)
        except BaseException as error:  # noqa: BLE001 - ImageError or worse: this request's answer, nobody else's
            with self._ready:
                self.decoding -= 1
                self._ready.notify_all()
            deliver(loop, future, error)
            return
        with self._ready:
            self.decoding -= 1
            if not self._stopping:
                self._queue.append((pixels, future, loop))
                self._ready.notify_all()
                return
        deliver(loop, future, shutting_down())

    def _lane(self, lane: int) -> None:
        """An encoder thread: take a batch whenever one is queued, encode it, answer its requests."""
        while True:
            with self._ready:
                batch, alone = self._take()
                if batch is None:
                    return
                self.busy += 1
            try:
                self._encode(batch, None if alone else lane)
            except Exception:  # noqa: BLE001 - never lose a lane: its requests are answered in _encode
                log.exception("lane %d: a batch of %d images went wrong", lane, len(batch))
            finally:
                with self._ready:  # no notify: the other lanes wait for the queue, never for this one
                    self.busy -= 1

    def _take(self) -> tuple[list | None, bool]:
        """(the next batch, whether it runs alone), or (None, False) when stopping. Holds _ready's lock."""
        while True:
            while not self._queue and not self._stopping:
                self._ready.wait()
            if self._stopping:
                return None, False
            if not (self.busy or self.solo):  # every lane idle: images decoding now are a burst's, worth a wait
                self._wait_for_stragglers()
            if self._queue:  # another lane, waiting too, may have taken them all
                break
        batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
        return batch, len(batch) == 1 and not (self.busy or self.solo)

    def _wait_for_stragglers(self) -> None:
        """Up to window_s while ordinary images are still decoding (holds _ready's lock, released while waiting)."""
        deadline = time.monotonic() + self.window_s
        while len(self._queue) < self.max_batch and self.decoding and not self._stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._ready.wait(remaining)

    def _encode(self, batch: list, lane: int | None) -> None:
        started = time.perf_counter()
        try:
            rows = self.run_batch(np.stack([pixels for pixels, _, _ in batch]), lane)
            if len(rows) != len(batch):
                raise RuntimeError(f"the encoder answered {len(rows)} rows for {len(batch)} images")
        except Exception as error:  # noqa: BLE001 - the batch's requests get the error, the lane lives on
            log.exception("batch of %d images failed", len(batch))
            answer([(future, loop, None) for _, future, loop in batch], error)
            return
        answer([(future, loop, row) for (_, future, loop), row in zip(batch, rows)])  # answers first, then counts
        self._count(len(batch), time.perf_counter() - started)

    def _count(self, images: int, seconds: float) -> None:
        with self._ready:
            self.batches += 1
            self.batched_images += images
        self.on_batch(images, seconds)


def answer(answers: list[tuple[asyncio.Future, asyncio.AbstractEventLoop, object]],
           error: BaseException | None = None) -> None:
    """Settle (future, loop, result) triples from any thread, one event-loop wake-up per loop: each future
    gets its result, or ``error``; nothing happens to a future whose request is gone."""
    by_loop: dict[asyncio.AbstractEventLoop, list] = {}
    for future, loop, result in answers:
        by_loop.setdefault(loop, []).append((future, result))

    def settle(items: list) -> None:
        for future, result in items:
            if not future.done():
                future.set_result(result) if error is None else future.set_exception(error)

    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
            loop.call_soon_threadsafe(settle, items)


def deliver(loop: asyncio.AbstractEventLoop, future: asyncio.Future, error: BaseException) -> None:
    answer([(future, loop, None)], error)


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
