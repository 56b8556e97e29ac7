"""Compare the ImageNet-frozen encoder with the fine-tuned variants under one heads protocol.

    python bench/finetune_bench.py --runs RUNS_DIR [--data ../shared/data/clothing] [--caches DIR]

RUNS_DIR holds one folder per variant written by ``embed-finetune`` (encoder.safetensors, curves.json,
split.json). For every encoder (ImageNet first): embed all images with the product's pipeline on its default
runtime (resumable caches under --caches; --frozen-cache: the ImageNet encoder's, `make model`'s), train the
logistic heads on the training rows outside the held-out groups with temperature and thresholds tuned on the
held-out groups (``train(..., calibrate_on=...)``), then score the held-out groups and the stand-in test split.
The fine-tuned network's own heads are scored on both too.
The variant to adopt is the best on the held-out groups (top-1 + macro tag F1); it is adopted only if it
beats the frozen encoder by >= 0.02 top-1 and >= 0.02 macro tag F1 on the held-out groups AND on the test.
Writes bench/results/finetune.json and bench/results/finetune_curves_<variant>.json, and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from classifiers.evaluate import evaluate  # noqa: E402
from classifiers.predict import Tagger  # noqa: E402
from classifiers.train import train  # noqa: E402
from embed.cache import read_cache  # noqa: E402
from embed.encoders import ENCODERS, LITE2_WEIGHTS_PREFIX, get_encoder  # noqa: E402
from embed.variants import VARIANTS  # noqa: E402
from embed.pipeline import EncoderChoice, embed_sources  # noqa: E402
from embed.runtime import Encoder, encoder_home  # noqa: E402
from vinted_tagger.files import file_sha256  # noqa: E402
from report import write_results  # noqa: E402  (bench/, this script's folder)

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "clothing"
FROZEN = "efficientnet-lite2"
MARGIN = 0.02  # the adoption rule's margin, on top-1 and on macro tag F1
# Every encoder runs on the same runtime and precision, so that scores and encode times compare: the variant
# the product runs by default (OpenVINO bf16 where the CPU has it), whose frozen cache `make model` keeps.
CACHE_VARIANT = "openvino-bf16"  # what `make model` embeds the stand-in with: the candidates' caches match it
RUNTIME = {"runtime": VARIANTS[CACHE_VARIANT].runtime, "precision": VARIANTS[CACHE_VARIANT].precision}


def heldout_uuids(runs: list[Path]) -> list[str]:
    """The held-out uuids, the same for every variant (one seeded split): refuse variants that disagree."""
    splits = [json.loads((run / "split.json").read_text())["heldout"] for run in runs]
    if any(sorted(s) != sorted(splits[0]) for s in splits):
        raise ValueError("the variants were fine-tuned with different held-out groups; rerun with one seed")
    return splits[0]


def encoder_name(run: Path) -> str:
    """The table's name for a run's weights when the table has them (e.g. the committed adapted encoder),
    else ``efficientnet-lite2:<file>``: caches built under the table name serve ``make model`` as they are."""
    digest = file_sha256(run / "encoder.safetensors")
    for name, spec in ENCODERS.items():
        if spec.sha256 == digest:
            return name
    return f"{LITE2_WEIGHTS_PREFIX}{run / 'encoder.safetensors'}"


def scores_of(predictions: pd.DataFrame, labels: pd.DataFrame) -> dict:
    result = evaluate(predictions, labels)
    return {"top1": result["category"]["top1"], "top2": result["category"]["top2"],
            "tag_f1": {t: m["f1"] for t, m in result["tags"].items()}, "macro_tag_f1": result["tags_macro"]["f1"]}


def encode_ms(names: list[str], images: Path, uuids: list[str], repeats: int = 5) -> dict[str, float]:
    """Encoder ms per image on the same 64 decoded images, the encoders interleaved (best of ``repeats``)."""
    from embed.images import load_pixels
    from embed.sources import list_images, select

    encoders = {name: Encoder.load(name, threads=2, **RUNTIME) for name in names}
    refs, _ = select(list_images([images]), uuids[:64])
    pixels = np.stack([load_pixels(ref.read(), encoders[names[0]].spec.input_size) for ref in refs])
    best = {name: float("inf") for name in names}
    for _ in range(repeats):
        for name, encoder in encoders.items():
            for start in range(0, len(pixels), 16):
                encoder.encode(pixels[start : start + 16])  # warm-up pass per repeat
            started = time.perf_counter()
            for start in range(0, len(pixels), 16):
                encoder.encode(pixels[start : start + 16])
            best[name] = min(best[name], (time.perf_counter() - started) * 1000 / len(pixels))
    return {name: round(ms, 2) for name, ms in best.items()}


def heads_protocol(name: str, cache: Path, train_labels: pd.DataFrame, held: list[str], test: pd.DataFrame) -> dict:
    """Logistic heads fitted outside the held-out groups, calibrated on them; scored on both splits."""
    embeddings = read_cache(cache)
    started = time.perf_counter()
    model = train(train_labels, embeddings, head="logreg", calibrate_on=held)
    heads_s = time.perf_counter() - started
    tagger = Tagger(model)

    def predict(uuids):
        vectors, found = embeddings.take(uuids)
        frame = tagger.predict_vectors(vectors[found])
        frame.insert(0, "uuid", [u for u, f in zip(uuids, found) if f])
        return frame

    held_labels = train_labels[train_labels["uuid"].isin(set(held))]
    held_scores = scores_of(predict(held_labels["uuid"].tolist()), held_labels)
    test_scores = scores_of(predict(test["uuid"].tolist()), test)
    return {"heldout": held_scores, "test": test_scores, "heads_seconds": round(heads_s, 1),
            "protocol": model.info["protocol"]}


def own_heads(run: Path, train_labels: pd.DataFrame, held: list[str], test: pd.DataFrame, images: Path,
              trunks: Path) -> dict:
    """The fine-tuned network's own softmax/sigmoid heads (tag threshold: best F1 on the held-out groups).
    The trunk maps of the training table are those fine-tuning cached (``trunks/trunk.pt``)."""
    from classifiers.finetune import own_head_predictions
    from classifiers.metrics import best_f1_threshold, counts, mean_defined, precision_recall_f1, top_k_accuracy

    rows = np.flatnonzero(train_labels["uuid"].isin(set(held)).to_numpy())
    held, tags, _ = own_head_predictions(run, train_labels, images, trunk=trunks / "trunk.pt", rows=rows)
    test_pred, _, _ = own_head_predictions(run, test, images, trunk=trunks / "trunk-test.pt")
    out = {}
    for split, pred in (("heldout", held), ("test", test_pred)):
        known = pred["y_cat"] >= 0
        out[split] = {"top1": top_k_accuracy(pred["cat"][known], pred["y_cat"][known], 1),
                      "top2": top_k_accuracy(pred["cat"][known], pred["y_cat"][known], 2), "tag_f1": {}}
    for j, tag in enumerate(tags):
        ok = ~np.isnan(held["y_tag"][:, j])
        threshold = best_f1_threshold(held["y_tag"][ok, j].astype(int), held["tag"][ok, j])["threshold"]
        for split, pred in (("heldout", held), ("test", test_pred)):
            y, p = pred["y_tag"][:, j], pred["tag"][:, j]
            ok = ~np.isnan(y)
            out[split]["tag_f1"][tag] = precision_recall_f1(*counts(y[ok].astype(bool), p[ok] >= threshold))["f1"]
    for split in out.values():
        split["macro_tag_f1"] = mean_defined(split["tag_f1"].values())
    return out


def entry(result: dict, train_minutes: float, ms: float) -> dict:
    r = lambda v: round(float(v), 4)  # noqa: E731
    return {"heldout_top1": r(result["heldout"]["top1"]), "heldout_top2": r(result["heldout"]["top2"]),
            "heldout_tag_f1": {t: r(v) for t, v in result["heldout"]["tag_f1"].items()},
            "heldout_macro_tag_f1": r(result["heldout"]["macro_tag_f1"]),
            "test_top1": r(result["test"]["top1"]), "test_top2": r(result["test"]["top2"]),
            "test_tag_f1": {t: r(v) for t, v in result["test"]["tag_f1"].items()},
            "test_macro_tag_f1": r(result["test"]["macro_tag_f1"]),
            "train_minutes": round(train_minutes, 1), "encode_ms": ms}


def beats(variant: dict, frozen: dict, split: str) -> bool:
    return (variant[f"{split}_top1"] - frozen[f"{split}_top1"] >= MARGIN
            and variant[f"{split}_macro_tag_f1"] - frozen[f"{split}_macro_tag_f1"] >= MARGIN)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, required=True, help="folder of embed-finetune output folders")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--caches", type=Path, default=encoder_home() / "caches")
    parser.add_argument("--frozen-cache", type=Path,
                        default=encoder_home() / "caches" / f"clothing-efficientnet-lite2-{CACHE_VARIANT}",
                        help=f"cache of the ImageNet encoder on {CACHE_VARIANT} (built or resumed; `make model`'s)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "finetune.json")
    parser.add_argument("--started", type=float, default=None,
                        help="Unix time the whole run started (make finetune's first step), for its end-to-end time")
    args = parser.parse_args()
    started = time.perf_counter()
    if not (args.data / "images.zip").exists():
        print(f"finetune_bench: {args.data}/images.zip not found (needs ../shared/data)", file=sys.stderr)
        return 1
    runs = sorted(p.parent for p in args.runs.glob("*/encoder.safetensors"))
    if not runs:
        print(f"finetune_bench: no */encoder.safetensors under {args.runs}", file=sys.stderr)
        return 1
    images = args.data / "images.zip"
    train_labels = pd.read_parquet(args.data / "data.parquet")
    test = pd.read_parquet(args.data / "test_labels.parquet")
    held = heldout_uuids(runs)
    names = {"imagenet-frozen": FROZEN, **{run.name: encoder_name(run) for run in runs}}
    caches = {"imagenet-frozen": args.frozen_cache, **{run.name: args.caches / f"clothing-{run.name}-{CACHE_VARIANT}"
                                                 for run in runs}}
    curves = {run.name: json.loads((run / "curves.json").read_text()) for run in runs}
    results, own, seconds, embedded, embed_s = {}, {}, {}, 0, 0.0
    for variant, name in names.items():
        summary = embed_sources([images], caches[variant], EncoderChoice(name, **RUNTIME))
        print(summary.line(), file=sys.stderr)
        seconds[f"embed {variant}"] = round(summary.seconds, 1)
        embedded, embed_s = embedded + summary.encoded, embed_s + summary.seconds
        results[variant] = heads_protocol(name, caches[variant], train_labels, held, test)
        print(f"finetune_bench: {variant}: {json.dumps(results[variant]['test'])}", file=sys.stderr)
        seconds[f"heads {variant}"] = results[variant]["heads_seconds"]
    held_labels = train_labels[train_labels["uuid"].isin(set(held))]
    for run in runs:
        own_started = time.perf_counter()
        own[run.name] = own_heads(run, train_labels, held, test, images, args.runs)
        seconds[f"own heads {run.name}"] = round(time.perf_counter() - own_started, 1)
    ms = encode_ms(list(names.values()), images, test["uuid"].tolist())
    minutes = {"imagenet-frozen": 0.0, **{run.name: curves[run.name]["train_minutes"] +
                                          curves[run.name].get("trunk_minutes", 0.0) for run in runs}}
    variants = {v: entry(results[v], minutes[v], ms[names[v]]) for v in names}
    for v in own:
        variants[v]["own_heads"] = entry(own[v], minutes[v], ms[names[v]])
        variants[v]["encoder"] = {"name": names[v], "weights_sha256": get_encoder(names[v]).sha256,
                                  "best_epoch": curves[v]["best_epoch"], "config": curves[v]["config"]}
    frozen = variants["imagenet-frozen"]
    best = max(own, key=lambda v: variants[v]["heldout_top1"] + variants[v]["heldout_macro_tag_f1"])
    adopted = beats(variants[best], frozen, "heldout") and beats(variants[best], frozen, "test")
    result = {"variants": variants, "candidate": best, "adopted": adopted,
              "default_encoder": best if adopted else "imagenet-frozen",
              "rule": f"candidate = best fine-tuned variant on the held-out groups (top-1 + macro tag F1); adopted "
                      f"if it beats imagenet-frozen by >= {MARGIN} top-1 and >= {MARGIN} macro tag F1 on the "
                      "held-out groups and on the stand-in test",
              "heads_protocol": results["imagenet-frozen"]["protocol"]["calibration"] +
              " calibration: logistic heads fitted on the training rows outside the held-out groups, temperature "
              "and thresholds tuned on the held-out groups; the same for every encoder",
              "heldout_rows": len(held_labels), "test_rows": len(test), "runtime": CACHE_VARIANT,
              "bench_seconds": {**seconds, "total": round(time.perf_counter() - started, 1)}}
    if args.started is not None:  # `make finetune` passes when it started: fine-tuning both variants included
        result["make_finetune_seconds"] = round(time.time() - args.started, 1)
    write_results(args.out, result)
    for variant, run in curves.items():  # one file per variant, each with its per-epoch "curves"
        write_results(args.out.parent / f"finetune_curves_{variant}.json", run)
    print_table(result)
    total = result["bench_seconds"]["total"]
    tuned = sum(c["train_minutes"] for c in curves.values()) + max(c.get("trunk_minutes", 0.0) for c in curves.values())
    print(f"finetune_bench: {len(runs)} variants fine-tuned in {tuned:.1f} min (shared trunk included), "
          f"{len(names)} encoders compared, {embedded} images embedded in {embed_s:.0f} s "
          f"({embedded / max(embed_s, 1e-9):.1f} img/s), {total:.0f} s in all"
          + (f", make finetune {result['make_finetune_seconds']:.0f} s end to end" if args.started is not None else "")
          + f" -> {args.out}")
    return 0


def print_table(result: dict) -> None:
    print("| encoder | held-out top-1 / top-2 / tag F1 | test top-1 / top-2 | test F1 polka dot / floral / checker "
          "| train min | encode ms/img |")
    print("|---|---|---|---|---|---|")
    rows = []
    for name, v in result["variants"].items():
        rows.append((name, v))
        if "own_heads" in v:
            rows.append((f"{name} (own heads)", v["own_heads"]))
    for name, v in rows:
        f1 = " / ".join(f"{x:.3f}" for x in v["test_tag_f1"].values())
        print(f"| {name} | {v['heldout_top1']:.3f} / {v['heldout_top2']:.3f} / {v['heldout_macro_tag_f1']:.3f} | "
              f"{v['test_top1']:.3f} / {v['test_top2']:.3f} | {f1} | {v['train_minutes']:.1f} | {v['encode_ms']:.1f} |")
    print(f"adopted: {result['adopted']} (candidate {result['candidate']}); default encoder: {result['default_encoder']}")


if __name__ == "__main__":
    sys.exit(main())
