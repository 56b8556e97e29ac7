"""Batches under load, one image alone: the encoder's throughput path (embed.runtime.OpenVinoRunner's chunks
over its streams) answers each image of a batch as it answers that image alone, and the service's batch
limit and window are measured (service/tuning.py), not fixed."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

from service.tuning import latency_limit, measure


@pytest.fixture(scope="module")
def openvino_encoder(lite2_encoder):
    """Lite2 on OpenVINO, compiled as the service compiles it (every batch size up to 16)."""
    pytest.importorskip("openvino", reason="pip install 'vinted-tagger[fast]'")
    from embed.runtime import Encoder

    return Encoder.load("efficientnet-lite2", runtime="openvino", precision="fp32", batches=tuple(range(1, 17)),
                        export=False)


def test_small_batches_run_on_the_streams_in_even_chunks(openvino_encoder) -> None:
    runner = openvino_encoder.runner
    assert sorted(runner.requests) == list(range(1, runner.STREAM_BATCH + 1))  # every chunk size compiled
    for n in range(2, 3 * runner.full):
        chunks = runner.chunks(n)
        assert sum(rows for rows, _ in chunks) == n
        assert all(rows == size for rows, size in chunks)  # never padded
        assert len(chunks) % runner.width == 0 or len(chunks) == n  # every stream takes a share
        assert max(rows for rows, _ in chunks) - min(rows for rows, _ in chunks) <= 1


def test_one_image_takes_the_latency_path_two_the_streams(openvino_encoder, monkeypatch) -> None:
    runner, calls = openvino_encoder.runner, []
    for path in ("_one", "_streamed"):
        original = getattr(runner, path)
        monkeypatch.setattr(runner, path, lambda pixels, path=path, original=original: calls.append(path)
                            or original(pixels))
    size = openvino_encoder.spec.input_size
    openvino_encoder.encode(np.zeros((1, size, size, 3), np.uint8))
    openvino_encoder.encode(np.zeros((2, size, size, 3), np.uint8))
    assert calls == ["_one", "_streamed"]


def test_each_image_of_a_batch_gets_its_answer_alone(openvino_encoder, picture) -> None:
    pixels = np.stack([openvino_encoder.pixels(picture(seed)) for seed in range(11)])
    alone = np.concatenate([openvino_encoder.encode(pixels[i : i + 1]) for i in range(len(pixels))])
    for n in (2, 3, 5, 8, 11):
        np.testing.assert_allclose(openvino_encoder.encode(pixels[:n]), alone[:n], rtol=1e-4, atol=1e-4)


def test_each_lane_answers_as_the_image_alone_while_the_other_runs(openvino_encoder, picture) -> None:
    """Lanes run at once, on requests of their own: every image's embedding equals its own alone."""
    from concurrent.futures import ThreadPoolExecutor

    assert openvino_encoder.lanes == openvino_encoder.runner.width >= 1
    pixels = np.stack([openvino_encoder.pixels(picture(seed)) for seed in range(7)])
    alone = np.concatenate([openvino_encoder.encode(pixels[i : i + 1]) for i in range(len(pixels))])
    batches = [pixels[:3], pixels[3:7], pixels[:1], pixels[1:6]]  # within, at and over a lane's chunk size
    with ThreadPoolExecutor(openvino_encoder.lanes) as pool:
        got = list(pool.map(lambda k: openvino_encoder.encode_on(k % openvino_encoder.lanes, batches[k]),
                            range(len(batches))))
    for batch, start, out in zip(batches, (0, 3, 0, 1), got):
        np.testing.assert_allclose(out, alone[start : start + len(batch)], rtol=1e-4, atol=1e-4)


def test_a_small_batch_timed_alone_is_not_padded(lite2_encoder, picture) -> None:
    """embed.speed times each variant compiled for the timed batch only: a batch of 2 must run as two chunks of
    one, not one chunk padded to STREAM_BATCH (measured at 40% of its speed, it lost auto to ONNX Runtime)."""
    pytest.importorskip("openvino", reason="pip install 'vinted-tagger[fast]'")
    from embed.runtime import Encoder

    encoder = Encoder.load("efficientnet-lite2", runtime="openvino", precision="fp32", batches=(2,), export=False)
    runner = encoder.runner
    assert all(rows == size for rows, size in runner.chunks(2)) and sorted(runner.requests) == [1, 2]
    pixels = np.stack([encoder.pixels(picture(seed)) for seed in range(2)])
    np.testing.assert_allclose(encoder.encode(pixels), np.concatenate([encoder.encode(pixels[:1]), encoder.encode(
        pixels[1:])]), rtol=1e-4, atol=1e-4)


def test_embeds_batches_keep_whole_chunks(lite2_encoder) -> None:
    pytest.importorskip("openvino", reason="pip install 'vinted-tagger[fast]'")
    from embed.runtime import Encoder

    encoder = Encoder.load("efficientnet-lite2", runtime="openvino", precision="fp32", batches=(1, 16), export=False)
    assert list(encoder.runner.requests) == [encoder.runner.STREAM_BATCH]


class FakeEncoder:
    """Per-image cost by batch size: whole batches of 16 are the cheapest per image, 32 no better; on lanes
    (two at once), a batch of 2 takes one image's time, 4 more than two."""

    WHOLE = {1: 4.0, 8: 3.0, 16: 1.0, 32: 2.0}
    LANE = {1: 40.0, 2: 20.0, 4: 24.0, 8: 26.0}  # past 2, bigger batches cost more per image, whatever the noise
    spec = SimpleNamespace(input_size=4)

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.lanes_used: set[int] = set()

    def encode(self, pixels: np.ndarray) -> None:
        self.sizes.append(len(pixels))
        time.sleep(len(pixels) * self.WHOLE[len(pixels)] / 1000)

    def encode_on(self, lane: int, pixels: np.ndarray) -> None:
        self.lanes_used.add(lane)
        time.sleep(len(pixels) * self.LANE[len(pixels)] / 1000)


def test_batch_limit_and_window_are_measured() -> None:
    encoder = FakeEncoder()
    tuning = measure(encoder, full=8)
    assert tuning.max_batch == 16 and set(tuning.image_ms) == {8, 16, 32}
    assert tuning.window_s == pytest.approx(tuning.batch1_ms / 1000, abs=1e-5) and tuning.batch1_ms >= 4.0


def test_lanes_batch_limit_is_measured_on_every_lane() -> None:
    encoder = FakeEncoder()
    tuning = measure(encoder, full=8, lanes=2)
    assert set(tuning.image_ms) == {1, 2, 4, 8} and encoder.lanes_used == {0, 1}
    assert tuning.max_batch == 2 and tuning.lanes == 2  # a batch of 4 takes 2.4 one-image times


@pytest.mark.parametrize(("image_ms", "limit"), [
    # A 2-core Xeon's start-up: 2 -> 4 saves 10.3% per image, and "the first doubling under 10%" chose 4, which
    # served concurrency 8 slower; a batch of 4 takes 3.07 one-image times, over the budget of 2.
    ({1: 4.715, 2: 4.033, 4: 3.617, 8: 3.432}, 2),
    ({1: 4.0, 2: 2.0, 4: 1.0, 8: 1.2}, 4),  # a wide accelerator: 4 images in one image's time, 8 in 2.4
    ({1: 4.0, 2: 4.4, 4: 1.0, 8: 0.5}, 1),  # a batch of 2 over the budget: none bigger, however cheap
    ({1: 4.0, 2: 3.9, 4: 3.8, 8: 3.7}, 1),  # batching saves 2.5% per image: within the budget, but only waiting
    ({1: 4.0, 2: 3.8, 4: 2.0, 8: 1.0}, 8),  # bounds included: 2 saves 5%, 4 and 8 take two batches of one
    ({1: 4.0, 2: 3.0, 4: 2.9, 8: 1.0}, 2),  # 4 saves too little over 2: 8 is not reached, however cheap
])
def test_lanes_batch_limit_is_the_largest_batch_within_two_image_times(image_ms, limit) -> None:
    assert latency_limit(image_ms) == limit


class DriftingEncoder(FakeEncoder):
    """Lanes on a machine that slows down while it is timed: each call 1.2x slower than the last. At one
    moment, batches of 2 cost 25% less per image than batches of 1, and 4 hardly less than 2."""

    LANE = {1: 2.4, 2: 1.8, 4: 1.74, 8: 1.71}

    def __init__(self) -> None:
        super().__init__()
        self.slowdown = 1.0

    def encode_on(self, lane: int, pixels: np.ndarray) -> None:
        time.sleep(len(pixels) * self.LANE[len(pixels)] * self.slowdown / 1000)
        if lane == 0:
            self.slowdown *= 1.2


def test_lanes_are_timed_size_after_size_round_after_round() -> None:
    """Timed one size after the other, a machine slowing down makes the later sizes look dear (batch 2 dearer
    than batch 1, so a limit of 1); timed in turn, each size's fastest comes from the same first round."""
    tuning = measure(DriftingEncoder(), full=8, lanes=2)
    assert tuning.image_ms[2] < tuning.image_ms[1] and tuning.max_batch == 2


def test_settings_given_win_over_measurement() -> None:
    encoder = FakeEncoder()
    tuning = measure(encoder, full=8, max_batch=4, window_ms=3)
    assert (tuning.max_batch, tuning.window_s, tuning.image_ms) == (4, 0.003, {})
    assert set(encoder.sizes) == {1}  # only the one-image time is measured
