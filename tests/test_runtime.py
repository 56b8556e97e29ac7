"""The encoder's runtimes x precisions (embed.variants.VARIANTS): the same answers as ONNX Runtime fp32 on real
pixels, a deterministic int8 calibration, ``auto`` as the fastest interchangeable variant measured here (the
timing kept per encoder, CPU and versions), fallbacks that say what ran, the packaged model predicting on any
CPU, and variants measured below the noise floor refused.

The module runs in a VINTED_TAGGER_HOME of its own (a copy of the session's exported EfficientNet-Lite2),
because calibrating an int8 copy changes what ``auto`` picks for every later test.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from classifiers.predict import RAN_KEY, Tagger, predict_cache
from classifiers.train import train
from embed import runtime, speed, variants
from embed.cache import CacheWriter, read_cache, read_manifest
from devtools.demo_data import make_demo_dataset
from embed.encoders import get_encoder
from embed.images import load_pixels
from embed.pipeline import EncoderChoice, embed_sources
from embed.quantize import calibrate, calibration_sample
from embed.runtime import Encoder, choose_variant, encoder_dir
from embed.sources import list_images
from embed.variants import VARIANTS, PrecisionMismatch, agreement_data, check_same_decisions

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
from agreement import decision_agreement  # noqa: E402  (bench/ is not a package)
from runtime_bench import agreement_record  # noqa: E402

pytest.importorskip("openvino", reason="the OpenVINO variants are run by openvino (a base dependency)")
LITE2 = "efficientnet-lite2"


@pytest.fixture(scope="module")
def home(tmp_path_factory, lite2_encoder, tiny_encoder) -> Path:
    """A private home holding copies of the exported Lite2 and tiny open_clip (no int8 yet)."""
    folder = tmp_path_factory.mktemp("runtime-home")
    for encoder in (lite2_encoder, tiny_encoder):  # Lite2's graph may be the packaged one: its int8 is left out
        target = folder / "encoders" / encoder.spec.slug
        target.mkdir(parents=True)
        for name in runtime.GRAPH_FILES:
            shutil.copy2(encoder.onnx_path.parent / name, target / name)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VINTED_TAGGER_HOME", str(folder))
        yield folder


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("runtime-demo"), n_train=96, n_test=48, seed=3)


@pytest.fixture(scope="module")
def int8(home, demo) -> dict:
    """The int8 copy, calibrated on the demo train images (a small sample keeps the test quick)."""
    train_ids = set(pd.read_parquet(demo / "data.parquet")["uuid"])
    refs = [ref for ref in list_images([demo / "data.zip"]) if ref.uuid in train_ids]
    return calibrate(get_encoder(LITE2), refs, count=24)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("name", [n for n in VARIANTS if n != "onnxruntime-fp32"])
def test_every_variant_matches_onnxruntime_fp32_on_real_pixels(name, int8, picture) -> None:
    variant = VARIANTS[name]
    pixels = np.stack([np.asarray(picture(seed, (260, 260))) for seed in range(6)])
    reference = Encoder.load(LITE2, 2, "onnxruntime", "fp32").encode(pixels)
    encoder = Encoder.load(LITE2, 2, variant.runtime, variant.precision, batches=(1, 4))
    assert encoder.record["variant"] == name and encoder.record["precision"] == variant.precision
    # 6 images on static shapes 1 and 4: one full batch plus a padded one; padding must not leak.
    vectors = encoder.encode(pixels)
    assert vectors.shape == reference.shape
    assert cosines(vectors, reference).min() >= variant.min_cosine, name
    np.testing.assert_allclose(encoder.encode(pixels[:1]), vectors[:1], atol=1e-5)


@pytest.fixture(scope="module")
def demo_pixels(demo) -> np.ndarray:
    """Real pixels: the first 33 demo images, decoded as embed decodes them."""
    size = get_encoder(LITE2).input_size
    return np.stack([load_pixels(ref.read(), size) for ref in list_images([demo / "data.zip"])[:33]])


def relative_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("name", ["openvino-bf16", "openvino-int8"])
def test_streamed_batches_give_the_single_request_rows_in_order(name, demo_pixels, int8) -> None:
    """A batch runs as padded chunks on parallel streams: each row is what the batch-1 request gives for that
    image (within bf16 rounding), in order, whatever the batch size."""
    variant = VARIANTS[name]
    streamed = Encoder.load(LITE2, 2, variant.runtime, variant.precision, batches=(16,))
    single = Encoder.load(LITE2, 2, variant.runtime, variant.precision, batches=(1,))
    assert len(streamed.runner.streams) == 2 and streamed.runner.single is None and not single.runner.streams
    one_by_one = np.concatenate([single.encode(p[None]) for p in demo_pixels])
    # The tolerance is far below the distance between two images' embeddings: a shuffled row would fail.
    assert relative_error(one_by_one[1:], one_by_one[:-1]).min() > 0.1
    for n in (1, 5, 16, 17, 33):
        rows = slice(33 - n, 33)  # not always the same first images
        vectors = streamed.encode(demo_pixels[rows])
        assert vectors.shape == (n, streamed.spec.dim)
        assert relative_error(vectors, one_by_one[rows]).max() <= 0.02, (name, n)


def test_small_batches_run_image_by_image_on_the_one_image_request(demo_pixels) -> None:
    """A batch too small to fill the streams (a service micro-batch), or any batch when only batch 1 is
    compiled, gives exactly the one-image request's rows."""
    both = Encoder.load(LITE2, 2, "openvino", "bf16", batches=(1, 16))
    only_one = Encoder.load(LITE2, 2, "openvino", "bf16", batches=(1,))
    one_by_one = np.concatenate([only_one.encode(p[None]) for p in demo_pixels[:9]])
    for encoder, n in ((both, 3), (both, 7), (only_one, 3), (only_one, 9)):
        np.testing.assert_array_equal(encoder.encode(demo_pixels[:n]), one_by_one[:n])
    assert relative_error(both.encode(demo_pixels[:9]), one_by_one).max() <= 0.02  # 9 fills the streams


def test_one_encoder_serves_concurrent_callers_one_at_a_time(demo_pixels) -> None:
    encoder = Encoder.load(LITE2, 2, "openvino", "bf16", batches=(1, 16))
    alone = [encoder.encode(demo_pixels[i : i + 5]) for i in range(0, 30, 5)]
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(lambda i: encoder.encode(demo_pixels[i : i + 5]), range(0, 30, 5)))
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(a, b)


def test_int8_calibration_is_deterministic_and_recorded(int8, demo, home, tiny_clip) -> None:
    encoder = Encoder.load(LITE2, 2, "openvino", "int8")
    assert encoder.record["calibration"] == int8["calibration"] and int8["calibration"]["images"] == 24
    assert encoder.record["graph_sha256"] == int8["onnx_sha256"]
    # Same sample, same file, byte for byte (on the tiny encoder: quantising Lite2 twice is slow).
    spec = runtime.ensure_onnx(get_encoder(tiny_clip.name))[1]
    refs = list_images([demo / "data.zip"])
    first = calibrate(spec, refs, count=8)
    again = calibrate(spec, list(reversed(refs)), count=8)  # listing order does not matter: same sample
    assert again["onnx_sha256"] == first["onnx_sha256"] and again["calibration"] == first["calibration"]
    assert runtime.file_sha256(encoder_dir(spec) / runtime.INT8_FILE) == first["onnx_sha256"]
    other = calibrate(spec, refs, count=8, seed=1)
    assert other["calibration"]["fingerprint"] != first["calibration"]["fingerprint"]


def measured_as(monkeypatch, floor: float, pairs: dict[tuple[str, str], float]) -> None:
    """Pretend the runtime bench measured these agreements (both directions alike) and this noise floor."""
    record = {"noise_floor": {"agreement": floor},
              "pairs": {f"{x}|{y}": {"agreement": value} for (a, b), value in pairs.items()
                        for x, y in ((a, b), (b, a))}}
    monkeypatch.setattr(variants, "measured", lambda: agreement_data(record))


def speeds_as(monkeypatch, speeds: dict[str, float]) -> list[list[str]]:
    """Pretend these are the variants' speeds here; returns the lists of variants ranked."""
    ranked = []

    def fake(spec, candidates, batch=16, remeasure=False):
        ranked.append([v.name for v in candidates])
        return {v.name: speeds[v.name] for v in candidates}

    monkeypatch.setattr(runtime, "variant_speeds", fake)
    return ranked


ALL_AGREE = {(a, b): 0.99 for a in VARIANTS for b in VARIANTS if a < b}


def test_auto_takes_the_fastest_variant_measured_here_among_the_interchangeable(int8, monkeypatch) -> None:
    spec = runtime.ensure_onnx(get_encoder(LITE2))[1]
    measured_as(monkeypatch, 0.95, ALL_AGREE)
    speeds_as(monkeypatch, {"onnxruntime-fp32": 10, "onnxruntime-int8": 20, "openvino-fp32": 30,
                            "openvino-bf16": 60, "openvino-int8": 50})
    assert choose_variant(spec).name == "openvino-bf16"
    speeds_as(monkeypatch, {"onnxruntime-fp32": 10, "onnxruntime-int8": 20, "openvino-fp32": 30,
                            "openvino-bf16": 40, "openvino-int8": 50})  # another CPU: int8 is the fastest
    assert choose_variant(spec).name == "openvino-int8"
    assert choose_variant(spec, runtime="onnxruntime").name == "onnxruntime-int8"
    assert choose_variant(spec, precision="fp32").name == "openvino-fp32"
    # int8 measured below the noise floor against the model's bf16: auto under that model leaves it out
    measured_as(monkeypatch, 0.95, {**ALL_AGREE, ("openvino-bf16", "openvino-int8"): 0.94,
                                    ("onnxruntime-int8", "openvino-bf16"): 0.94})
    assert choose_variant(spec, agree_with={"variant": "openvino-bf16"}).name == "openvino-bf16"
    with pytest.raises(ValueError, match="valid: onnxruntime-fp32"):
        choose_variant(spec, "onnxruntime", "bf16")


def test_int8_is_a_candidate_only_where_its_calibrated_copy_exists(int8, monkeypatch) -> None:
    spec = runtime.ensure_onnx(get_encoder(LITE2))[1]
    measured_as(monkeypatch, 0.95, ALL_AGREE)
    ranked = speeds_as(monkeypatch, dict.fromkeys(VARIANTS, 1.0) | {"openvino-int8": 99.0})
    monkeypatch.setattr(runtime, "INT8_FILES", (runtime.INT8_FILE, "no-such-int8.json"))  # never calibrated
    assert choose_variant(spec).name != "openvino-int8"
    assert not any("int8" in name for name in ranked[-1])


def test_the_timing_is_kept_and_measured_again_when_the_cpu_or_versions_change(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VINTED_TAGGER_HOME", str(tmp_path))
    calls = []

    def measure(names):
        calls.append(list(names))
        return {name: 10.0 * (len(calls)) for name in names}

    key = speed.speed_key(("abc", "def"), {"openvino": "1", "onnxruntime": "2"}, 16)
    first = speed.measured_speeds(key, ["openvino-bf16", "openvino-fp32"], measure)
    assert first == {"openvino-bf16": 10.0, "openvino-fp32": 10.0} and len(calls) == 1
    assert speed.measured_speeds(key, ["openvino-bf16", "openvino-fp32"], measure) == first and len(calls) == 1
    assert (tmp_path / speed.SPEED_FILE).exists()
    newer = speed.speed_key(("abc", "def"), {"openvino": "1.1", "onnxruntime": "2"}, 16)  # a runtime upgraded
    assert speed.measured_speeds(newer, ["openvino-bf16"], measure) == {"openvino-bf16": 20.0} and len(calls) == 2
    monkeypatch.setattr(speed, "cpu_record", lambda: {"cpu": {"model_name": "another CPU"}})
    moved = speed.speed_key(("abc", "def"), {"openvino": "1", "onnxruntime": "2"}, 16)
    assert moved != key
    assert speed.measured_speeds(moved, ["openvino-bf16"], measure) == {"openvino-bf16": 30.0} and len(calls) == 3
    assert speed.measured_speeds(key, ["openvino-bf16"], measure) == {"openvino-bf16": 10.0}  # the first CPU's
    assert speed.measured_speeds(key, ["openvino-bf16"], measure, remeasure=True) == {"openvino-bf16": 40.0}
    (tmp_path / speed.SPEED_FILE).write_text("not json")  # a damaged cache is measured again, not an error
    assert speed.measured_speeds(key, ["openvino-bf16"], measure) == {"openvino-bf16": 50.0}
    monkeypatch.setattr(speed, "TIMING", speed.TIMING + 1)  # the timing method changed: kept figures are stale
    changed = speed.speed_key(("abc", "def"), {"openvino": "1", "onnxruntime": "2"}, 16)
    assert speed.measured_speeds(changed, ["openvino-bf16"], measure) == {"openvino-bf16": 60.0}


def test_the_real_timing_ranks_the_runnable_variants_and_is_kept(int8, monkeypatch) -> None:
    spec = runtime.ensure_onnx(get_encoder(LITE2))[1]
    monkeypatch.setattr(runtime, "TIMING_SECONDS", 0.05)
    candidates = [VARIANTS["onnxruntime-fp32"], VARIANTS["openvino-fp32"]]
    found = runtime.variant_speeds(spec, candidates, batch=2, remeasure=True)
    assert set(found) == {"onnxruntime-fp32", "openvino-fp32"} and min(found.values()) > 0
    monkeypatch.setattr(runtime, "time_variants", lambda *a: pytest.fail("measured again"))
    assert runtime.variant_speeds(spec, candidates, batch=2) == found


def test_without_openvino_an_explicit_openvino_falls_back_to_onnxruntime_in_one_line(tmp_path, demo, few,
                                                                                     monkeypatch, caplog):
    monkeypatch.setattr(runtime, "openvino_core", lambda: None)
    with caplog.at_level(logging.WARNING, logger="embed.runtime"):
        summary = embed_sources([demo / "data.zip"], tmp_path / "cache", EncoderChoice(LITE2, "openvino", "fp32"), few,
                                progress=False)
    assert summary.encoded > 0
    lines = [r.getMessage() for r in caplog.records if r.name == "embed.runtime"]
    assert len(lines) == 1 and "openvino is not installed" in lines[0] and "running onnxruntime-fp32" in lines[0]
    recorded = read_manifest(tmp_path / "cache")["runtime"]
    assert (recorded["variant"], recorded["runtime"], recorded["precision"]) == ("onnxruntime-fp32", "onnxruntime", "fp32")


def test_without_bf16_an_explicit_bf16_falls_back_to_fp32_in_one_line(tmp_path, demo, few, monkeypatch, caplog):
    monkeypatch.setattr(runtime, "cpu_capabilities", lambda: ["FP32", "INT8"])
    with caplog.at_level(logging.WARNING, logger="embed.runtime"):
        embed_sources([demo / "data.zip"], tmp_path / "cache", EncoderChoice(LITE2, "openvino", "bf16"), few,
                      progress=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "embed.runtime"]
    assert len(lines) == 1 and "no BF16" in lines[0] and "running openvino-fp32" in lines[0]
    recorded = read_manifest(tmp_path / "cache")["runtime"]
    assert (recorded["variant"], recorded["ran_precision"]) == ("openvino-fp32", "fp32")
    assert recorded["decoder"] in ("simplejpeg", "pillow")


@pytest.mark.parametrize("machine", ["no BF16", "no OpenVINO"])
def test_the_packaged_model_predicts_on_a_cpu_without_bf16_and_without_openvino(machine, demo, monkeypatch,
                                                                                caplog, tmp_path) -> None:
    """The packaged model's heads were trained on OpenVINO bf16; elsewhere auto runs the fastest variant
    interchangeable with it (as measured, variant_agreement.json) and the decisions come back, quietly."""
    if machine == "no BF16":
        monkeypatch.setattr(runtime, "cpu_capabilities", lambda: ["FP32", "INT8"])
    else:
        monkeypatch.setattr(runtime, "openvino_core", lambda: None)
    speeds_as(monkeypatch, {name: 2.0 if name.startswith("openvino") else 1.0 for name in VARIANTS})
    tagger = Tagger.load()
    assert tagger.runtime["variant"] == "openvino-bf16"
    images = [ref.read() for ref in list_images([demo / "data.zip"])[:3]]
    with caplog.at_level(logging.WARNING, logger="embed.runtime"):
        results = tagger.predict_images(images)
    assert [sorted(r) for r in results] == [["categories", "category1", "category2", "tags"]] * 3
    assert not [r for r in caplog.records if r.name == "embed.runtime"]  # auto skips quietly
    ran = tagger.ran["variant"]
    assert ran != "openvino-bf16" and (machine == "no BF16") == ran.startswith("openvino")
    assert variants.same_decisions("openvino-bf16", ran)


def test_classify_predict_says_what_ran_in_the_file_and_one_line(demo, tmp_path, capsys) -> None:
    import pyarrow.parquet as pq

    from classifiers.cli import main

    image = tmp_path / "photo.jpg"
    image.write_bytes(list_images([demo / "data.zip"])[0].read())
    assert main(["predict", "--images", str(image), "--out", str(tmp_path / "p.parquet"),
                 "--runtime", "onnxruntime", "--precision", "fp32"]) == 0
    assert "ran onnxruntime-fp32" in capsys.readouterr().err
    ran = json.loads(pq.read_schema(tmp_path / "p.parquet").metadata[RAN_KEY])
    assert ran["model_variant"] == "openvino-bf16" and [r["variant"] for r in ran["ran"]] == ["onnxruntime-fp32"]


def test_list_variants_prints_speed_agreement_and_the_choice(monkeypatch, capsys, int8) -> None:
    from embed.cli import main

    speeds_as(monkeypatch, {"onnxruntime-fp32": 11.0, "onnxruntime-int8": 12.0, "openvino-fp32": 13.0,
                            "openvino-bf16": 14.0, "openvino-int8": 15.0})
    measured_as(monkeypatch, 0.95, {**ALL_AGREE, ("openvino-bf16", "openvino-int8"): 0.9})
    assert main(["--list-variants"]) == 0
    out = capsys.readouterr().out
    assert "agreement with openvino-bf16 (the model's)" in out
    assert [line.split()[:2] for line in out.splitlines()[1:6]] == [
        ["onnxruntime-fp32", "11.0"], ["onnxruntime-int8", "12.0"], ["openvino-fp32", "13.0"],
        ["openvino-bf16", "14.0"], ["openvino-int8", "15.0"]]
    assert "0.9000" in out and out.strip().endswith("auto takes openvino-bf16")


def test_the_agreement_data_is_what_the_runtime_bench_measured() -> None:
    """embed/variant_agreement.json (what the product reads) is bench/results/runtime.json's figures."""
    result = json.loads((BENCH / "results" / "runtime.json").read_text())
    kept = json.loads(variants.AGREEMENT_FILE.read_text())
    assert {k: v for k, v in kept.items() if k != "measured_by"} == agreement_record(result)
    assert set(kept["pairs"]) == {f"{a}|{b}" for a in VARIANTS for b in VARIANTS if a != b}
    for pair in kept["pairs"].values():
        assert 0 <= pair["top2_set_agreement"] <= 1


@pytest.fixture
def few(demo) -> list[str]:
    return pd.read_parquet(demo / "test.parquet")["uuid"].tolist()[:6]


@pytest.fixture(scope="module")
def embedded(int8, demo, tmp_path_factory) -> dict[str, Path]:
    """The demo images embedded by three variants, each into a cache of its own."""
    folder = tmp_path_factory.mktemp("runtime-caches")
    caches = {}
    for name in ("onnxruntime-fp32", "openvino-bf16", "openvino-int8"):
        variant = VARIANTS[name]
        caches[name] = folder / name
        embed_sources([demo / "data.zip"], caches[name], EncoderChoice(LITE2, variant.runtime, variant.precision),
                      progress=False)
    return caches


def test_heads_trained_on_fp32_keep_their_decisions_on_other_precisions(embedded, demo) -> None:
    """On the demo data every precision keeps the fp32 heads' decisions (the stand-in is the harder test:
    bench/runtime_bench.py measures which pairs are interchangeable)."""
    tagger = Tagger(train(demo / "data.parquet", embedded["onnxruntime-fp32"]))
    assert tagger.runtime["variant"] == "onnxruntime-fp32"
    test_ids = pd.read_parquet(demo / "test.parquet")["uuid"].tolist()
    reference, _ = read_cache(embedded["onnxruntime-fp32"]).take(test_ids)
    for name in ("openvino-bf16", "openvino-int8"):
        vectors, _ = read_cache(embedded[name]).take(test_ids)
        agreement = decision_agreement(tagger, reference, vectors)
        assert min(agreement.values()) >= 0.99, (name, agreement)


def test_a_variant_measured_below_the_noise_floor_is_refused(embedded, demo, tmp_path, monkeypatch) -> None:
    # as if the bench had measured bf16 and int8 moving more decisions than invisible noise does
    measured_as(monkeypatch, 0.95, {**{pair: 0.9 for pair in ALL_AGREE}, ("onnxruntime-fp32", "openvino-fp32"): 1.0})
    tagger = Tagger(train(demo / "data.parquet", embedded["onnxruntime-fp32"]))
    spec = runtime.ensure_onnx(get_encoder(LITE2))[1]
    for name in ("openvino-bf16", "openvino-int8"):
        with pytest.raises(PrecisionMismatch, match=f"{name}.*0.9000 is below the noise floor 0.9500"):
            predict_cache(tagger, embedded[name])
        variant = VARIANTS[name]
        with pytest.raises(PrecisionMismatch):  # explicitly asking for it under fp32 heads
            choose_variant(spec, variant.runtime, variant.precision, tagger.runtime)
    speeds_as(monkeypatch, {"onnxruntime-fp32": 1.0, "onnxruntime-int8": 9.0, "openvino-fp32": 2.0,
                            "openvino-bf16": 9.0, "openvino-int8": 9.0})
    assert choose_variant(spec, agree_with=tagger.runtime).name == "openvino-fp32"  # the fastest that agrees
    bf16 = read_cache(embedded["openvino-bf16"])
    with pytest.raises(PrecisionMismatch):  # adding fp32 rows to a bf16 cache
        CacheWriter(embedded["openvino-bf16"], runtime.EncoderSpec.from_dict(bf16.encoder), {},
                    runtime={"variant": "onnxruntime-fp32"})
    # an interchangeable pair mixes: openvino-fp32 rows into an ONNX Runtime fp32 cache, listed as also_ran
    few = pd.read_parquet(demo / "test.parquet")["uuid"].tolist()[:3]
    cache = tmp_path / "mixed"
    embed_sources([demo / "data.zip"], cache, EncoderChoice(LITE2, "onnxruntime", "fp32"), few[:2], progress=False)
    embed_sources([demo / "data.zip"], cache, LITE2, few, progress=False)  # auto keeps the cache's decisions
    manifest = read_manifest(cache)
    assert manifest["runtime"]["variant"] == "onnxruntime-fp32" and manifest["also_ran"] == ["openvino-fp32"]
    frame, _ = predict_cache(tagger, cache, few)
    assert len(frame) == 3
    # measured at or above the floor: the same pair mixes
    measured_as(monkeypatch, 0.95, ALL_AGREE)
    assert len(predict_cache(tagger, embedded["openvino-bf16"])[0]) > 0
    # an unknown precision is never mixed with anything
    with pytest.raises(PrecisionMismatch, match="unknown runtime/precision"):
        check_same_decisions({"variant": "onnxruntime-fp32"}, {"variant": "openvino-fp16"}, "cache x")


def test_cli_runtime_mistakes_are_one_line_and_exit_2(capsys) -> None:
    from embed.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--calibrate"])
    assert exit_info.value.code == 2 and "--calibrate needs SOURCE" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["x.zip", "--out", "c", "--precision", "fp16"])
    assert exit_info.value.code == 2 and "invalid choice: 'fp16'" in capsys.readouterr().err


def test_decoders_give_the_same_pixels_and_rotated_jpegs_go_through_pillow(picture, image_bytes) -> None:
    pytest.importorskip("simplejpeg")
    from PIL import Image

    from embed.images import decode_turbo, load_pixels

    data = image_bytes(picture(4, (200, 150)))
    turbo, pillow = load_pixels(data, 64, decoder="simplejpeg"), load_pixels(data, 64, decoder="pillow")
    assert turbo.shape == pillow.shape == (64, 64, 3)
    assert np.abs(turbo.astype(int) - pillow).mean() < 2.0
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: libjpeg-turbo would ignore it, so Pillow decodes (and rotates) it
    rotated = image_bytes(picture(4, (200, 150)), exif=exif.tobytes())
    assert decode_turbo(rotated, 64) is None and decode_turbo(b"not a jpeg", 64) is None
    np.testing.assert_array_equal(load_pixels(rotated, 64, decoder="simplejpeg"), load_pixels(rotated, 64, decoder="pillow"))
    with pytest.raises(ValueError, match="valid: simplejpeg, pillow"):
        Encoder(runtime.ensure_onnx(get_encoder(LITE2))[1], runtime.ensure_onnx(get_encoder(LITE2))[0], decoder="png")
