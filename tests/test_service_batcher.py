"""The micro-batcher (service/batcher.py) with stand-in decode and batch functions: no model needed."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from embed.images import ImageError

# The service needs the serve extra (FastAPI, uvicorn, python-multipart); without it these tests skip.
pytest.importorskip("fastapi", reason="pip install 'vinted-tagger[serve]'")
from service.batcher import Batcher  # noqa: E402
from service.errors import ApiError  # noqa: E402
from service.settings import Settings  # noqa: E402


def decode(data: bytes) -> np.ndarray:
    if data == b"bad":
        raise ImageError("not an image (unrecognised format)", "not_an_image")
    time.sleep(0.002)  # decoding takes a little while, as a real JPEG does
    return np.full((2, 2, 3), int(data), np.uint8)


class Recorder:
    """run_batch stand-in: remembers each batch's size, answers each image with its own pixel value."""

    def __init__(self, delay: float = 0.01, fail: bool = False):
        self.sizes: list[int] = []
        self.lanes: list[int | None] = []  # each batch's lane (None: a lone image on the low-latency path)
        self.spans: list[tuple[float, float]] = []  # each batch's start and end
        self.delay, self.fail = delay, fail

    def __call__(self, pixels: np.ndarray, lane: int | None) -> list[int]:
        self.sizes.append(len(pixels))
        self.lanes.append(lane)
        started = time.perf_counter()
        time.sleep(self.delay)
        self.spans.append((started, time.perf_counter()))
        if self.fail:
            raise RuntimeError("encoder exploded")
        return [int(p[0, 0, 0]) for p in pixels]


def make(run_batch, **overrides) -> Batcher:
    options = {"max_batch": 8, "window_s": 0.005, "max_pending": 64, "decode_threads": 2, **overrides}
    return Batcher(decode, run_batch, **options)


async def serve(batcher: Batcher, payloads: list[bytes]) -> list:
    batcher.start()
    try:
        return await asyncio.gather(*(batcher.predict(p) for p in payloads), return_exceptions=True)
    finally:
        await batcher.stop()


def test_concurrent_images_share_batches_and_get_their_own_answers() -> None:
    recorder = Recorder()
    payloads = [str(i).encode() for i in range(20)]
    answers = asyncio.run(serve(make(recorder), payloads))
    assert answers == list(range(20))
    assert sum(recorder.sizes) == 20
    assert max(recorder.sizes) > 1 and max(recorder.sizes) <= 8  # batched, never over max_batch
    assert set(recorder.lanes) <= {0, None}  # one lane (and the low-latency path for a lone image)


def test_bad_image_fails_alone() -> None:
    recorder = Recorder()
    answers = asyncio.run(serve(make(recorder), [b"1", b"bad", b"3"]))
    assert answers[0] == 1 and answers[2] == 3
    assert isinstance(answers[1], ImageError)


def test_lone_image_does_not_wait_for_the_window() -> None:
    async def lone() -> float:
        batcher = make(Recorder(delay=0), window_s=2.0)
        batcher.start()
        started = time.perf_counter()
        await batcher.predict(b"7")
        elapsed = time.perf_counter() - started
        await batcher.stop()
        return elapsed

    assert asyncio.run(lone()) < 0.5


def test_batch_failure_reaches_its_requests_and_the_lanes_survive() -> None:
    """A failing encoder call answers its batch's requests with the error, on the lone path and on the lanes
    (several images at once); the lanes go on answering afterwards."""
    recorder = Recorder(fail=True)

    async def scenario():
        batcher = make(recorder, workers=2)
        batcher.start()
        first = await asyncio.gather(*(batcher.predict(str(i).encode()) for i in range(6)), return_exceptions=True)
        recorder.fail = False
        second = await asyncio.gather(*(batcher.predict(str(i).encode()) for i in range(6)))
        await batcher.stop()
        return first, second, batcher.pending

    first, second, pending = asyncio.run(scenario())
    assert all(isinstance(answer, RuntimeError) for answer in first)
    assert any(lane is not None for lane in recorder.lanes[:len(recorder.lanes) // 2])  # lanes failed too
    assert second == list(range(6)) and pending == 0


def test_a_short_answer_from_the_encoder_fails_its_batch_not_silently() -> None:
    """An encoder call that returns fewer rows than images fails every request of the batch: none waits."""
    async def scenario():
        batcher = make(lambda pixels, lane: [0] * (len(pixels) - 1), workers=1)
        batcher.start()
        try:
            return await asyncio.wait_for(asyncio.gather(*(batcher.predict(b"1") for _ in range(4)),
                                                         return_exceptions=True), 5)
        finally:
            await batcher.stop()

    answers = asyncio.run(scenario())
    assert len(answers) == 4 and any(isinstance(a, RuntimeError) for a in answers)


def test_too_many_pending_images_get_503() -> None:
    answers = asyncio.run(serve(make(Recorder(delay=0.05), max_pending=3), [str(i).encode() for i in range(6)]))
    overloaded = [a for a in answers if isinstance(a, ApiError)]
    assert len(overloaded) == 3 and all(e.status == 503 and e.code == "overloaded" for e in overloaded)
    assert [a for a in answers if not isinstance(a, ApiError)] == [0, 1, 2]


def test_settings_from_env() -> None:
    env = {"VINTED_TAGGER_MAX_FILE_MB": "2.5", "VINTED_TAGGER_MAX_FILES": "4", "VINTED_TAGGER_BATCH_WINDOW_MS": "1"}
    settings = Settings.from_env(env, max_batch=8)
    assert (settings.max_file_mb, settings.max_files, settings.batch_window_ms, settings.max_batch) == (2.5, 4, 1.0, 8)
    assert settings.max_file_bytes == int(2.5 * 1024 * 1024)
    assert Settings.from_env({}) == Settings()
    with pytest.raises(ValueError, match="VINTED_TAGGER_MAX_FILES"):
        Settings.from_env({"VINTED_TAGGER_MAX_FILES": "many"})
    with pytest.raises(ValueError):
        Settings(max_files=0)


def test_several_workers_run_batches_at_once() -> None:
    recorder = Recorder(delay=0.05)
    answers = asyncio.run(serve(make(recorder, max_batch=1, workers=2), [b"1", b"2", b"3", b"4"]))
    assert answers == [1, 2, 3, 4] and recorder.sizes == [1, 1, 1, 1]
    assert {0, 1} <= set(recorder.lanes)  # both lanes took batches
    spans = sorted(recorder.spans)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:]))  # two ran at the same time


def test_a_lone_image_runs_alone_and_a_loaded_one_on_a_lane() -> None:
    """Idle: one pool call on the low-latency path (lane None). While a lane is busy, the next images queue
    and a free lane takes them together."""
    recorder = Recorder(delay=0.05)

    async def scenario() -> None:
        batcher = make(recorder, workers=2)
        batcher.start()
        assert await batcher.predict(b"5") == 5 and recorder.lanes == [None]
        answers = await asyncio.gather(*(batcher.predict(str(i).encode()) for i in range(6)))
        await batcher.stop()
        assert answers == list(range(6))

    asyncio.run(scenario())
    assert recorder.lanes[1:] and all(lane in (0, 1, None) for lane in recorder.lanes[1:])
    assert max(recorder.sizes[1:]) > 1  # the queue built up while a lane was busy: batches, not one by one


def test_stop_answers_every_waiting_image() -> None:
    """Images queued or still decoding when the service stops get 503 shutting_down, never silence."""
    async def scenario() -> list:
        batcher = make(Recorder(delay=0.3), max_batch=1, workers=1)
        batcher.start()
        waiting = [asyncio.ensure_future(batcher.predict(str(i).encode())) for i in range(4)]
        await asyncio.sleep(0.1)  # one image encoding, the others queued
        await batcher.stop()
        return await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 5)

    answers = asyncio.run(scenario())
    refused = [a for a in answers if isinstance(a, ApiError)]
    assert refused and all(a.status == 503 and a.code == "shutting_down" for a in refused)
    assert len(answers) == 4


def test_a_heavy_decode_does_not_hold_batches_open() -> None:
    """The window waits for ordinary images still decoding, never for a decode-heavy one (it comes much later)."""
    def slow_when_heavy(data: bytes) -> np.ndarray:
        time.sleep(1.0 if data == b"9" else 0.002)
        return np.full((2, 2, 3), int(data), np.uint8)

    async def scenario() -> float:
        batcher = Batcher(slow_when_heavy, Recorder(delay=0), max_batch=8, window_s=2.0, max_pending=8,
                          decode_threads=2, inspect=lambda data: 1 if data == b"9" else 0, heavy_work=0.5)
        batcher.start()
        heavy = asyncio.ensure_future(batcher.predict(b"9"))
        await asyncio.sleep(0.05)  # the heavy image is decoding
        started = time.perf_counter()
        assert await batcher.predict(b"1") == 1
        elapsed = time.perf_counter() - started
        assert await heavy == 9
        await batcher.stop()
        return elapsed

    assert asyncio.run(scenario()) < 0.5


def test_lanes_waiting_together_never_take_an_empty_batch() -> None:
    """Two idle lanes both wait out a burst's window; the one that finds the queue emptied by the other waits
    for more instead of running an empty batch."""
    batcher = make(Recorder(), workers=2, window_s=1.0, max_batch=8)
    taken: list = []

    def lane() -> None:
        with batcher._ready:
            taken.append(batcher._take()[0])

    with batcher._ready:  # one image queued, one still decoding: both lanes hold the batch open for it
        batcher._queue.append((np.zeros((2, 2, 3), np.uint8), None, None))
        batcher.decoding = 1
    lanes = [threading.Thread(target=lane) for _ in range(2)]
    for thread in lanes:
        thread.start()
    deadline = time.monotonic() + 5
    while len(batcher._ready._waiters) < 2 and time.monotonic() < deadline:  # both lanes inside the window
        time.sleep(0.005)
    with batcher._ready:  # the straggler arrives: one lane takes both, the other must keep waiting
        batcher._queue.append((np.zeros((2, 2, 3), np.uint8), None, None))
        batcher.decoding = 0
        batcher._ready.notify_all()
    time.sleep(0.05)
    with batcher._ready:
        batcher._stopping = True
        batcher._ready.notify_all()
    for thread in lanes:
        thread.join(2)
    assert sorted(len(batch) if batch is not None else -1 for batch in taken) == [-1, 2]


def test_a_heavy_image_decoded_after_stop_is_refused_not_lost() -> None:
    """A decode-heavy image still decoding when the service stops gets 503 shutting_down, never silence."""
    def slow_when_heavy(data: bytes) -> np.ndarray:
        time.sleep(0.3 if data == b"9" else 0.002)
        return np.full((2, 2, 3), int(data), np.uint8)

    async def scenario():
        batcher = Batcher(slow_when_heavy, Recorder(delay=0), max_batch=8, window_s=0.01, max_pending=8,
                          decode_threads=2, inspect=lambda data: 1 if data == b"9" else 0, heavy_work=0.5)
        batcher.start()
        heavy = asyncio.ensure_future(batcher.predict(b"9"))
        await asyncio.sleep(0.05)  # decoding in the heavy lane
        await batcher.stop()
        return await asyncio.wait_for(asyncio.gather(heavy, return_exceptions=True), 5)

    (answer,) = asyncio.run(scenario())
    assert isinstance(answer, ApiError) and answer.code == "shutting_down"

