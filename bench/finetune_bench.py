"""Compare the ImageNet-frozen encoder with the fine-tuned variants under one heads protocol, and adopt one
only on held-out evidence.

    python bench/finetune_bench.py --runs RUNS_DIR [--data ../shared/data/clothing] [--caches DIR]

RUNS_DIR holds one folder per variant written by ``finetune-encoder`` (python -m training): encoder.safetensors,
heads.safetensors, curves.json, split.json; unfinished runs are left out and named. The committed blocks 5-6
baseline (the table's efficientnet-lite2-clothing and its committed curve) joins them when RUNS_DIR has no
folder of that name. For every encoder (ImageNet first): embed all images with the product's pipeline on its
default runtime (resumable caches under --caches; --frozen-cache: `make model`'s), fit the logistic heads on
the training rows outside the held-out groups with temperature and thresholds tuned on the held-out groups
(``train(..., calibrate_on=...)``), then score the held-out groups and the stand-in test split; the tag rows
are the photos of worn dresses (source dress-patterns), also reported on their own. The fine-tuned networks'
own heads are scored too. WiSE-FT: the best trained variant's weights mixed with ImageNet's at each alpha of
``training.robust.ALPHAS``, alpha chosen on the held-out groups (``choose_alpha``), become a variant of their own.

Adoption (on held-out groups only; the test split confirms and is reported, never chooses): the best variant
on the held-out groups (top-1 + macro tag F1) is adopted when it beats imagenet-frozen there by >= 0.02 top-1
and loses no more than 0.005 macro tag F1 (held-out tag rows = the worn dress photos).
Writes bench/results/finetune.json and bench/results/finetune_curves_<variant>.json, and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
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
from training.labels import heldout_mask  # noqa: E402
from training.robust import ALPHAS, choose_alpha, wise_encoder  # noqa: E402
from vinted_tagger.files import file_sha256  # noqa: E402
from report import machine, write_results  # noqa: E402  (bench/, this script's folder)

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "clothing"
RESULTS = ROOT / "bench" / "results"
FROZEN = "efficientnet-lite2"
MARGIN = 0.02  # top-1 the adopted variant must gain on the held-out groups
TAG_LOSS = 0.005  # macro tag F1 it may lose there at most
WORN = "dress-patterns"  # the source whose photos show worn garments
# The committed baseline of the last round (blocks 5-6 on cached trunk maps), reused rather than retrained.
BASELINE = ("blocks5-6", "efficientnet-lite2-clothing", RESULTS / "finetune_curves_blocks5-6.json")
# Its weights: once an adopted encoder has replaced them under that name, its row is carried from the results
# file this run replaces (measured while the weights were there), never recomputed with other weights.
BASELINE_SHA256 = "268ec231c2961ace48ae1983f4eea623125bc4ee0c90258885ac5156708e7d8a"
# Every encoder runs on the same runtime and precision, so that scores and encode times compare: the variant
# the product runs by default (OpenVINO bf16 where the CPU has it), whose frozen cache `make model` keeps.
CACHE_VARIANT = "openvino-bf16"  # what `make model` embeds the stand-in with: the candidates' caches match it
RUNTIME = {"runtime": VARIANTS[CACHE_VARIANT].runtime, "precision": VARIANTS[CACHE_VARIANT].precision}


@dataclass
class Variant:
    name: str
    encoder: str  # an encoder name the table resolves
    curves: dict
    run: Path | None = None  # the run folder (own heads, WiSE-FT); None for the committed baseline


def encoder_name(weights: Path) -> str:
    """The table's name for a weight file when the table has it, else ``efficientnet-lite2:<file>``."""
    digest = file_sha256(weights)
    for name, spec in ENCODERS.items():
        if spec.sha256 == digest:
            return name
    return f"{LITE2_WEIGHTS_PREFIX}{weights}"


def find_variants(runs: Path) -> list[Variant]:
    found = []
    for folder in sorted(p.parent for p in runs.glob("*/curves.json")):
        curves = json.loads((folder / "curves.json").read_text())
        if not curves.get("finished") or not (folder / "encoder.safetensors").exists():
            print(f"finetune_bench: {folder.name} is not finished (epoch {curves.get('epochs_run')}); left out",
                  file=sys.stderr)
            continue
        found.append(Variant(folder.name, encoder_name(folder / "encoder.safetensors"), curves, folder))
    name, encoder, curve_file = BASELINE
    if name not in {v.name for v in found} and curve_file.exists() and ENCODERS[encoder].sha256 == BASELINE_SHA256:
        found.insert(0, Variant(name, encoder, json.loads(curve_file.read_text())))
    return found


def heldout_uuids(train_labels: pd.DataFrame, variants: list[Variant]) -> list[str]:
    """The held-out groups' uuids (one seeded split): refuse runs that were tuned with other groups."""
    held = train_labels["uuid"][heldout_mask(train_labels)].astype(str).tolist()
    for v in variants:
        if v.run is not None and not set(json.loads((v.run / "split.json").read_text())["heldout"]) <= set(held):
            raise ValueError(f"{v.name} was fine-tuned with other held-out groups; rerun it with seed 0")
    return held


def scores_of(predictions: pd.DataFrame, labels: pd.DataFrame) -> dict:
    result = evaluate(predictions, labels)
    scores = {"top1": result["category"]["top1"], "top2": result["category"]["top2"],
              "tag_f1": {t: m["f1"] for t, m in result["tags"].items()}, "macro_tag_f1": result["tags_macro"]["f1"]}
    if "source" in labels:
        worn = labels[labels["source"] == WORN]
        if len(worn):
            scores["worn_macro_tag_f1"] = evaluate(predictions[predictions["uuid"].isin(set(worn["uuid"]))],
                                                   worn)["tags_macro"]["f1"]
    return scores


def embed(variant: str, encoder: str, cache: Path, images: Path, seconds: dict) -> None:
    summary = embed_sources([images], cache, EncoderChoice(encoder, **RUNTIME))
    print(summary.line(), file=sys.stderr)
    seconds[f"embed {variant}"] = round(summary.seconds, 1)


def heads_protocol(cache: Path, train_labels: pd.DataFrame, held: list[str], test: pd.DataFrame | None) -> dict:
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
    result = {"heldout": scores_of(predict(held_labels["uuid"].tolist()), held_labels),
              "heads_seconds": round(heads_s, 1), "protocol": model.info["protocol"]}
    if test is not None:
        result["test"] = scores_of(predict(test["uuid"].tolist()), test)
    return result


def own_heads(run: Path, train_labels: pd.DataFrame, held: list[str], test: pd.DataFrame, images: Path) -> dict:
    """The fine-tuned network's own softmax/sigmoid heads on the product's preprocessing (tag threshold: best
    F1 on the held-out groups, then applied to the test split)."""
    from classifiers.metrics import best_f1_threshold, counts, mean_defined, precision_recall_f1, top_k_accuracy
    from training.data import Photos, loader, read_blobs
    from training.evaluate import predict
    from training.labels import task_labels
    from training.model import BASE
    from training.weights import load_finetuned

    model = load_finetuned(run)
    held_labels = train_labels[train_labels["uuid"].isin(set(held))]
    preds = {}
    for split, labels in (("heldout", held_labels), ("test", test)):
        _, tags, y_cat, y_tag = task_labels(labels, classes=model.classes)
        if tags != model.tag_names:
            raise ValueError(f"{run.name}: trained for tags {model.tag_names}, the labels have {tags}")
        uuids = labels["uuid"].astype(str).tolist()
        photos = Photos(read_blobs(images, set(uuids)), uuids, np.arange(len(uuids)), BASE.input_size)
        preds[split] = predict(model, loader(photos, 64, workers=1), y_cat, y_tag)
    out = {split: {"top1": top_k_accuracy(p["cat"][p["y_cat"] >= 0], p["y_cat"][p["y_cat"] >= 0], 1),
                   "top2": top_k_accuracy(p["cat"][p["y_cat"] >= 0], p["y_cat"][p["y_cat"] >= 0], 2), "tag_f1": {}}
           for split, p in preds.items()}
    for j, tag in enumerate(model.tag_names):
        ok = ~np.isnan(preds["heldout"]["y_tag"][:, j])
        threshold = best_f1_threshold(preds["heldout"]["y_tag"][ok, j].astype(int),
                                      preds["heldout"]["tag"][ok, j])["threshold"]
        for split, p in preds.items():
            ok = ~np.isnan(p["y_tag"][:, j])
            out[split]["tag_f1"][tag] = precision_recall_f1(
                *counts(p["y_tag"][ok, j].astype(bool), p["tag"][ok, j] >= threshold))["f1"]
    for split in out.values():
        split["macro_tag_f1"] = mean_defined(split["tag_f1"].values())
    return out


def wise_variant(best: Variant, caches: Path, images: Path, train_labels: pd.DataFrame, held: list[str],
                 heldout_score: float, seconds: dict) -> tuple[Variant, dict]:
    """WiSE-FT of ``best``: its weights mixed with ImageNet's at each alpha, scored on the held-out groups
    (``heldout_score`` is alpha 1.0, ``best`` itself); the chosen alpha's encoder becomes a variant."""
    scores = {1.0: heldout_score}
    names = {1.0: best.encoder}
    for alpha in ALPHAS:
        weights = best.run / f"wise-{alpha:g}" / "encoder.safetensors"
        if not weights.exists():
            wise_encoder(best.run / "encoder.safetensors", alpha, weights)
        names[alpha] = encoder_name(weights)
        cache = caches / f"clothing-{best.name}-wise{alpha:g}-{CACHE_VARIANT}"
        embed(f"{best.name} wise {alpha:g}", names[alpha], cache, images, seconds)
        held_scores = heads_protocol(cache, train_labels, held, None)["heldout"]
        scores[alpha] = held_scores["top1"] + held_scores["macro_tag_f1"]
    alpha = choose_alpha(scores)
    variant = Variant(f"{best.name}-wise", names[alpha], {**best.curves, "wise_alpha": alpha}, None)
    return variant, {"alpha": alpha, "heldout_top1_plus_tag_f1": {f"{a:g}": round(s, 4) for a, s in scores.items()},
                     "of": best.name}


def entry(result: dict, curves: dict, ms: float, curve_file: str | None) -> dict:
    r = lambda v: round(float(v), 4)  # noqa: E731
    record = {}
    for split in ("heldout", "test"):
        s = result[split]
        record.update({f"{split}_top1": r(s["top1"]), f"{split}_top2": r(s["top2"]),
                       f"{split}_tag_f1": {t: r(v) for t, v in s["tag_f1"].items()},
                       f"{split}_macro_tag_f1": r(s["macro_tag_f1"])})
        if "worn_macro_tag_f1" in s:
            record[f"{split}_worn_macro_tag_f1"] = r(s["worn_macro_tag_f1"])
    minutes = curves.get("train_minutes", 0.0) + curves.get("trunk_minutes", 0.0)
    return {**record, "train_minutes": round(minutes, 1), "encode_ms": ms, "epochs": curves.get("epochs_run", 0),
            "best_epoch": curves.get("best_epoch"), "curve_file": curve_file}


def adoption(variants: dict) -> tuple[str, bool]:
    """The best fine-tuned variant on the held-out groups, and whether it meets the rule there."""
    frozen = variants["imagenet-frozen"]
    tuned = [v for v in variants if v != "imagenet-frozen"]
    best = max(tuned, key=lambda v: variants[v]["heldout_top1"] + variants[v]["heldout_macro_tag_f1"])
    v = variants[best]
    worn = v.get("heldout_worn_macro_tag_f1", v["heldout_macro_tag_f1"])
    adopted = (v["heldout_top1"] - frozen["heldout_top1"] >= MARGIN
               and v["heldout_macro_tag_f1"] >= frozen["heldout_macro_tag_f1"] - TAG_LOSS
               and worn >= frozen.get("heldout_worn_macro_tag_f1", frozen["heldout_macro_tag_f1"]) - TAG_LOSS)
    return best, adopted


def encode_ms(names: list[str], images: Path, uuids: list[str], repeats: int = 5) -> dict[str, float]:
    """Encoder ms per image on the same 64 decoded images, the encoders interleaved (best of ``repeats``)."""
    from embed.images import load_pixels
    from embed.sources import list_images, select

    encoders = {name: Encoder.load(name, threads=2, **RUNTIME) for name in dict.fromkeys(names)}
    refs, _ = select(list_images([images]), uuids[:64])
    pixels = np.stack([load_pixels(ref.read(), encoders[names[0]].spec.input_size) for ref in refs])
    best = {name: float("inf") for name in encoders}
    for _ in range(repeats):
        for name, encoder in encoders.items():
            for start in range(0, len(pixels), 16):
                encoder.encode(pixels[start : start + 16])  # warm-up pass per repeat
            started = time.perf_counter()
            for start in range(0, len(pixels), 16):
                encoder.encode(pixels[start : start + 16])
            best[name] = min(best[name], (time.perf_counter() - started) * 1000 / len(pixels))
    return {name: round(ms, 2) for name, ms in best.items()}


def compare(variants: list[Variant], args, train_labels, test, held) -> tuple[dict, dict, dict]:
    """Heads-protocol and own-heads results of every encoder, WiSE-FT of the best trained one, timings."""
    images, seconds = args.images, {}
    caches = {"imagenet-frozen": args.frozen_cache}
    encoders = {"imagenet-frozen": FROZEN, **{v.name: v.encoder for v in variants}}
    results = {}
    for name, encoder in encoders.items():
        caches.setdefault(name, args.caches / f"clothing-{name}-{CACHE_VARIANT}")
        embed(name, encoder, caches[name], images, seconds)
        results[name] = heads_protocol(caches[name], train_labels, held, test)
        seconds[f"heads {name}"] = results[name]["heads_seconds"]
        print(f"finetune_bench: {name}: held-out {json.dumps(results[name]['heldout'])}", file=sys.stderr)
    trained = [v for v in variants if v.run is not None]
    wise = None
    if trained:
        score = lambda v: results[v.name]["heldout"]["top1"] + results[v.name]["heldout"]["macro_tag_f1"]  # noqa: E731
        best = max(trained, key=score)
        variant, wise = wise_variant(best, args.caches, images, train_labels, held, score(best), seconds)
        variants.append(variant)
        encoders[variant.name] = variant.encoder
        cache = args.caches / f"clothing-{best.name}-wise{wise['alpha']:g}-{CACHE_VARIANT}"
        results[variant.name] = heads_protocol(cache if wise["alpha"] != 1.0 else caches[best.name],
                                               train_labels, held, test)
    own = {}
    for v in trained:
        started = time.perf_counter()
        own[v.name] = own_heads(v.run, train_labels, held, test, images)
        seconds[f"own heads {v.name}"] = round(time.perf_counter() - started, 1)
    ms = encode_ms(list(encoders.values()), images, test["uuid"].tolist())
    return results, own, {"seconds": seconds, "ms": {n: ms[e] for n, e in encoders.items()}, "wise": wise}


def carry_baseline(table: dict, previous: Path) -> None:
    """The committed baseline's row from the results file this run replaces, when its weights are gone."""
    name = BASELINE[0]
    if name in table or not previous.exists():
        return
    row = json.loads(previous.read_text()).get("variants", {}).get(name)
    if row is not None:
        table[name] = {**row, "carried": f"from the previous {previous.name}: its weights were replaced by an "
                                          "adopted encoder under the same name"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, required=True, help="folder of finetune-encoder output folders")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--images", type=Path, default=None, help="default: DATA/images.zip")
    parser.add_argument("--caches", type=Path, default=encoder_home() / "caches")
    parser.add_argument("--frozen-cache", type=Path,
                        default=encoder_home() / "caches" / f"clothing-efficientnet-lite2-{CACHE_VARIANT}",
                        help=f"cache of the ImageNet encoder on {CACHE_VARIANT} (built or resumed; `make model`'s)")
    parser.add_argument("--out", type=Path, default=RESULTS / "finetune.json")
    parser.add_argument("--started", type=float, default=None,
                        help="Unix time the whole run started (make finetune's first step), for its end-to-end time")
    args = parser.parse_args()
    args.images = args.images or args.data / "images.zip"
    started = time.perf_counter()
    if not args.images.exists():
        print(f"finetune_bench: {args.images} not found (needs ../shared/data)", file=sys.stderr)
        return 1
    variants = find_variants(args.runs)
    if not variants:
        print(f"finetune_bench: no finished run under {args.runs} and no committed baseline", file=sys.stderr)
        return 1
    train_labels = pd.read_parquet(args.data / "data.parquet")
    test = pd.read_parquet(args.data / "test_labels.parquet")
    held = heldout_uuids(train_labels, variants)
    results, own, extra = compare(variants, args, train_labels, test, held)
    curve_files = {v.name: f"finetune_curves_{v.name}.json" for v in variants if v.run is not None}
    curve_files[BASELINE[0]] = BASELINE[2].name
    curves = {"imagenet-frozen": {}, **{v.name: v.curves for v in variants}}
    table = {name: entry(results[name], curves[name], extra["ms"][name], curve_files.get(name.removesuffix("-wise")))
             for name in results}
    for name, scores in own.items():
        table[name]["own_heads"] = entry(scores, curves[name], extra["ms"][name], None)
    for v in variants:
        # the weights' checksum: what `make adopt` (training.adopt) checks the file it commits against
        table[v.name]["encoder"] = {"name": v.encoder, "config": v.curves.get("config"),
                                    "weights_sha256": get_encoder(v.encoder).sha256}
    carry_baseline(table, args.out)
    best, adopted = adoption(table)
    result = {"variants": table, "candidate": best, "adopted": adopted, "wise_ft": extra["wise"],
              "default_encoder": best if adopted else "imagenet-frozen",
              "rule": f"candidate = best fine-tuned variant on the held-out groups (top-1 + macro tag F1); adopted if "
                      f"it beats imagenet-frozen there by >= {MARGIN} top-1 and loses no more than {TAG_LOSS} macro "
                      "tag F1 (held-out tag rows = the worn dress photos); the stand-in test confirms, never chooses",
              "heads_protocol": "logistic heads fitted on the training rows outside the held-out groups, temperature "
                                "and thresholds tuned on the held-out groups; the same for every encoder",
              "heldout_rows": int(train_labels["uuid"].isin(set(held)).sum()), "test_rows": len(test),
              "runtime": CACHE_VARIANT, "bench_seconds": {**extra["seconds"],
                                                          "total": round(time.perf_counter() - started, 1)},
              "machine": machine()}  # encode_ms is a speed: the docs name the machine it came from
    if args.started is not None:  # `make finetune` passes when it started: fine-tuning included
        result["make_finetune_seconds"] = round(time.time() - args.started, 1)
    write_results(args.out, result)
    for v in variants:
        if v.run is not None:  # one file per trained variant, each with its per-epoch "curves"
            write_results(args.out.parent / curve_files[v.name], v.curves)
    print_table(result)
    print(f"finetune_bench: {len(table)} encoders compared, {result['bench_seconds']['total']:.0f} s -> {args.out}")
    return 0


def print_table(result: dict) -> None:
    print("| encoder | epochs | held-out top-1 / top-2 / tag F1 (worn) | test top-1 / top-2 | test F1 polka dot / "
          "floral / checker | train min | encode ms/img |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for name, v in result["variants"].items():
        rows.append((name, v))
        if "own_heads" in v:
            rows.append((f"{name} (own heads)", v["own_heads"]))
    for name, v in rows:
        f1 = " / ".join(f"{x:.3f}" for x in v["test_tag_f1"].values())
        print(f"| {name} | {v['epochs']} | {v['heldout_top1']:.3f} / {v['heldout_top2']:.3f} / "
              f"{v['heldout_macro_tag_f1']:.3f} | {v['test_top1']:.3f} / {v['test_top2']:.3f} | {f1} | "
              f"{v['train_minutes']:.1f} | {v['encode_ms']:.1f} |")
    print(f"adopted: {result['adopted']} (candidate {result['candidate']}); "
          f"default encoder: {result['default_encoder']}")


if __name__ == "__main__":
    sys.exit(main())
