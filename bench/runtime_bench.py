"""Benchmark the encoder's runtimes x precisions in ONE run, interleaved, on the same decoded images.

    python bench/runtime_bench.py [--data ../shared/data/clothing] [--limit N] [--batch-size 16]

1. Builds the int8 copy if it is missing (`embed --calibrate` on the train split: seeded sample).
2. Decodes the stand-in images chunk by chunk, once, and runs every variant of embed.variants.VARIANTS on
   each chunk in turn, called as `embed` calls it (Encoder.encode on batches of embed's batch size, which
   OpenVINO runs as chunks on its throughput streams): img/s of the encoder alone.
3. Batch 1: one image at a time, as the service calls it (OpenVINO's latency request), variants interleaved
   image by image (median ms).
4. Cosine of every embedding to ONNX Runtime fp32's (minimum over all images).
5. Heads trained on each variant's train-split embeddings (classifiers.train, as `classify train`), scored
   on the test split; and the decisions of the fp32 heads on each variant's test embeddings against their
   decisions on fp32's (`agreement`: the lowest of category1 and each tag, over all test images).
6. Every pair (`pairs`, "<heads' variant>|<embeddings' variant>"): the heads trained on one variant's
   embeddings, deciding from another's test embeddings against from their own: the lowest agreement of
   category1 and each tag, and the agreement of the top-2 set (both proposed categories, either order).
7. The noise floor of that agreement (`noise_floor`): the fp32 heads on ONNX Runtime fp32 embeddings of
   the test images with seeded +-1-level noise added to their pixels, a change no eye sees, against the clean
   ones: how often the heads' decisions move when nothing visible does.
Writes bench/results/runtime.json, the agreements the product reads (embed/variant_agreement.json: a pair
is interchangeable when both directions agree at or above the noise floor, embed.variants) and prints a
table. `default` is the fastest variant here interchangeable with ONNX Runtime fp32; `same_scores` says
whether its test scores stay within 0.005 / 0.01 of fp32's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from tqdm import tqdm  # noqa: E402

from classifiers.evaluate import evaluate  # noqa: E402
from agreement import decision_agreement, top2_set_agreement  # noqa: E402  (bench/)
from classifiers.predict import Tagger  # noqa: E402
from classifiers.train import train  # noqa: E402
from embed.cache import Embeddings  # noqa: E402
from embed.encoders import get_encoder  # noqa: E402
from embed.images import load_pixels  # noqa: E402
from embed.pipeline import BATCH_SIZE, DEFAULT_ENCODER  # noqa: E402
from embed.runtime import Encoder, ensure_onnx, int8_dir  # noqa: E402
from embed.variants import AGREEMENT_FILE, REFERENCE_VARIANT, VARIANTS, agreement_data  # noqa: E402
from embed.sources import list_images  # noqa: E402
from report import run_record, write_results  # noqa: E402  (bench/, this script's folder)

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "clothing"
ENCODER = DEFAULT_ENCODER  # the product's encoder (after `make adopt`, the adopted one)
CHUNK = 256  # images decoded at once, then run through every variant
LATENCY_IMAGES = 64


def ensure_int8(data: Path, refs) -> None:
    spec = get_encoder(ENCODER)
    _, spec = ensure_onnx(spec)
    if int8_dir(spec) is not None:
        return
    from embed.quantize import calibrate

    train_ids = set(pd.read_parquet(data / "data.parquet")["uuid"].astype(str))
    record = calibrate(spec, [ref for ref in refs if ref.uuid in train_ids])
    print(f"runtime_bench: int8 calibrated on {record['calibration']['images']} train images", file=sys.stderr)


def pick(refs, limit: int | None):
    """All refs, or a seeded sample of ``limit`` of them (train and test images alike)."""
    if not limit or limit >= len(refs):
        return refs
    picked = np.random.default_rng(0).choice(len(refs), size=limit, replace=False)
    return [refs[i] for i in sorted(picked)]


def decoded_chunks(refs, size: int):
    """The images of ``refs`` decoded as the encoder takes them, CHUNK at a time."""
    for start in range(0, len(refs), CHUNK):
        yield np.stack([load_pixels(ref.read(), size) for ref in refs[start : start + CHUNK]])


def encode_batches(encoder: Encoder, pixels: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """``pixels`` through ``encoder`` as `embed` feeds it: one call per ``batch_size`` images."""
    return [encoder.encode(pixels[i : i + batch_size]) for i in range(0, len(pixels), batch_size)]


def encode_all(encoders: dict[str, Encoder], refs, batch_size: int) -> tuple[dict, dict]:
    """Embeddings and encoder seconds per variant; each chunk is decoded once and run by every variant,
    in an order that rotates from chunk to chunk (no variant always runs on a cold cache)."""
    size = next(iter(encoders.values())).spec.input_size
    vectors = {name: [] for name in encoders}
    seconds = dict.fromkeys(encoders, 0.0)
    names = list(encoders)
    chunks = tqdm(decoded_chunks(refs, size), total=-(-len(refs) // CHUNK), desc="runtime_bench", unit="chunk",
                  file=sys.stderr)
    for k, pixels in enumerate(chunks):
        shift = k % len(names)
        for name in names[shift:] + names[:shift]:
            began = time.perf_counter()
            out = encode_batches(encoders[name], pixels, batch_size)
            seconds[name] += time.perf_counter() - began
            vectors[name].append(np.concatenate(out))
    return {name: np.concatenate(parts) for name, parts in vectors.items()}, seconds


def batch1_ms(encoders: dict[str, Encoder], refs) -> dict[str, float]:
    size = next(iter(encoders.values())).spec.input_size
    times = {name: [] for name in encoders}
    for ref in refs[:LATENCY_IMAGES]:
        pixels = load_pixels(ref.read(), size)[None]
        for name, encoder in encoders.items():
            began = time.perf_counter()
            encoder.encode(pixels)
            times[name].append((time.perf_counter() - began) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


NOISE_LEVELS = 1  # +-1 of 255 per pixel and channel, uniform over {-1, 0, 1}: invisible


def noise_floor(encoder: Encoder, tagger: Tagger, refs, clean: np.ndarray, batch_size: int) -> dict:
    """Agreement of ``tagger`` between ``clean`` (its embeddings of ``refs``) and embeddings of the same
    pixels with seeded +-NOISE_LEVELS noise."""
    rng = np.random.default_rng(0)
    noisy = []
    for pixels in decoded_chunks(refs, encoder.spec.input_size):
        pixels = np.clip(pixels + rng.integers(-NOISE_LEVELS, NOISE_LEVELS + 1, pixels.shape), 0, 255).astype(np.uint8)
        noisy += encode_batches(encoder, pixels, batch_size)
    noisy = np.concatenate(noisy)
    return {"perturbation": f"uniform +-{NOISE_LEVELS} of 255 per pixel and channel (seed 0)",
            "variant": encoder.variant.name, "images": len(refs),
            "cosine_mean": round(float(cosines(noisy, clean).mean()), 5), **agreements(tagger, clean, noisy)}


def agreements(tagger: Tagger, vectors: np.ndarray, other: np.ndarray) -> dict:
    """The lowest decision agreement, each decision's, and the top-2 set's, rounded as results keep them."""
    agreement = decision_agreement(tagger, vectors, other)
    return {"agreement": round(min(agreement.values()), 4),
            "agreement_by_decision": {k: round(v, 4) for k, v in agreement.items()},
            "top2_set_agreement": round(top2_set_agreement(tagger, vectors, other), 4)}


def pair_agreements(taggers: dict[str, Tagger], vectors: dict[str, np.ndarray], rows: list[int]) -> dict:
    """For every ordered pair: the heads trained on the first variant's embeddings, deciding from the
    second's test embeddings against from their own."""
    return {f"{a}|{b}": agreements(taggers[a], vectors[a][rows], vectors[b][rows])
            for a in taggers for b in taggers if a != b}


def downstream(data: Path, uuids: np.ndarray, vectors: np.ndarray, encoder: Encoder) -> tuple[dict, Tagger]:
    """Heads trained on these embeddings of the train split, scored on the test split."""
    manifest = {"encoder": encoder.spec.to_dict(), "runtime": encoder.record}
    embeddings = Embeddings(manifest, uuids, vectors)
    tagger = Tagger(train(data / "data.parquet", embeddings))
    test_ids = pd.read_parquet(data / "test.parquet")["uuid"].astype(str).tolist()
    test_vectors, found = embeddings.take(test_ids)
    frame = tagger.predict_vectors(test_vectors)
    frame.insert(0, "uuid", [u for u, f in zip(test_ids, found) if f])
    scores = evaluate(frame, pd.read_parquet(data / "test_labels.parquet"))
    result = {"top1": round(scores["category"]["top1"], 4), "top2": round(scores["category"]["top2"], 4),
              "tag_f1": {tag: round(m["f1"], 4) for tag, m in scores["tags"].items()}}
    return result, tagger


TOLERANCE = {"top1": 0.005, "top2": 0.005, "tag_f1": 0.01}  # "the same answers" as fp32's


def same_scores(scores: dict, reference: dict) -> bool:
    """Test scores within the tolerances of fp32's."""
    tags = [abs(scores["tag_f1"][t] - reference["tag_f1"][t]) <= TOLERANCE["tag_f1"] + 1e-9 for t in scores["tag_f1"]]
    return all(tags) and all(abs(scores[k] - reference[k]) <= TOLERANCE[k] + 1e-9 for k in ("top1", "top2"))


MEASURED_BY = "python bench/runtime_bench.py  (make bench-runtime): all stand-in images"


def agreement_record(result: dict) -> dict:
    """What the product keeps of a run's results (embed/variant_agreement.json); tests hold the two equal."""
    floor = result["noise_floor"]
    return {"noise_floor": {k: floor[k] for k in ("agreement", "top2_set_agreement", "variant", "perturbation")},
            "pairs": {pair: {k: v[k] for k in ("agreement", "top2_set_agreement")}
                      for pair, v in result["pairs"].items()},
            "machine_cpu": result["machine"].get("cpu", {}).get("model_name")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=None, help="a seeded sample of N images (default: all)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="images per encode call (embed's)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "runtime.json")
    parser.add_argument("--agreement-out", default=str(AGREEMENT_FILE),
                        help="where the product's copy of the agreements goes ('' for nowhere: a sample run)")
    args = parser.parse_args()
    if not (args.data / "images.zip").exists():
        print(f"runtime_bench: {args.data}/images.zip not found (needs ../shared/data)", file=sys.stderr)
        return 1
    load_at_start = os.getloadavg()[0]
    refs = list_images([args.data / "images.zip"])
    ensure_int8(args.data, refs)
    refs = pick(refs, args.limit)
    spec = get_encoder(ENCODER)
    encoders = {name: Encoder.load(spec, args.threads, v.runtime, v.precision, (1, args.batch_size))
                for name, v in VARIANTS.items()}
    vectors, seconds = encode_all(encoders, refs, args.batch_size)
    latency = batch1_ms(encoders, refs)
    uuids = np.array([ref.uuid for ref in refs])
    test_ids = pd.read_parquet(args.data / "test.parquet")["uuid"].astype(str).tolist()
    index = {u: i for i, u in enumerate(uuids)}
    rows = [index[u] for u in test_ids if u in index]
    scores, taggers = {}, {}
    for name in encoders:
        scores[name], taggers[name] = downstream(args.data, uuids, vectors[name], encoders[name])
    reference = vectors[REFERENCE_VARIANT]
    floor = noise_floor(encoders[REFERENCE_VARIANT], taggers[REFERENCE_VARIANT], [refs[i] for i in rows],
                        reference[rows], args.batch_size)
    pairs = pair_agreements(taggers, vectors, rows)
    variants = {}
    for name in encoders:
        cosine = cosines(vectors[name], reference)
        variants[name] = {
            "images_per_s": round(len(refs) / seconds[name], 1),
            "batch1_ms": round(latency[name], 2),
            "cosine_min": round(float(cosine.min()), 5),
            "cosine_mean": round(float(cosine.mean()), 5),
            **scores[name],
            **agreements(taggers[REFERENCE_VARIANT], reference[rows], vectors[name][rows]),
            "same_scores": same_scores(scores[name], scores[REFERENCE_VARIANT]),
            "ran_precision": encoders[name].record["ran_precision"],
        }
    data = agreement_data({"noise_floor": floor, "pairs": pairs})
    fastest = [n for n in sorted(variants, key=lambda n: -variants[n]["images_per_s"])
               if n == REFERENCE_VARIANT or n in data["interchangeable"].get(REFERENCE_VARIANT, ())]
    default = fastest[0]
    result = {
        "ort_fp32_images_per_s": variants[REFERENCE_VARIANT]["images_per_s"],
        "default_images_per_s": variants[default]["images_per_s"],
        "default_speedup": round(variants[default]["images_per_s"] / variants[REFERENCE_VARIANT]["images_per_s"], 2),
        "default": default,
        "variants": dict(sorted(variants.items())),
        "noise_floor": floor,
        "pairs": dict(sorted(pairs.items())),
        "images": len(refs),
        "batch_size": args.batch_size,
        "threads": args.threads,
        **run_record(load_at_start),
    }
    write_results(args.out, result)
    if args.agreement_out:
        write_results(Path(args.agreement_out), {"measured_by": MEASURED_BY, **agreement_record(result)})
    print_table(result)
    return 0


def print_table(result: dict) -> None:
    print(f"| runtime-precision | img/s (batch {result['batch_size']}) | batch 1 ms | cosine min | top-1 | top-2 | tag F1 | agreement "
          "| top-2 set | same scores |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, v in result["variants"].items():
        f1 = " / ".join(f"{x:.3f}" for x in v["tag_f1"].values())
        mark = " (default)" if name == result["default"] else ""
        print(f"| {name}{mark} | {v['images_per_s']} | {v['batch1_ms']} | {v['cosine_min']:.4f} | {v['top1']:.3f} | "
              f"{v['top2']:.3f} | {f1} | {v['agreement']:.3f} | {v['top2_set_agreement']:.3f} | "
              f"{'yes' if v['same_scores'] else 'no'} |")
    print(f"default {result['default']}: {result['default_speedup']}x ONNX Runtime fp32")
    for pair, v in result["pairs"].items():
        print(f"heads|embeddings {pair}: agreement {v['agreement']:.4f}, top-2 set {v['top2_set_agreement']:.4f}")
    floor = result["noise_floor"]
    print(f"noise floor ({floor['perturbation']}, {floor['variant']}): agreement {floor['agreement']:.3f} "
          f"({', '.join(f'{k} {v:.3f}' for k, v in floor['agreement_by_decision'].items())})")


if __name__ == "__main__":
    sys.exit(main())
