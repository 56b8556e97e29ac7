"""Benchmark the heads on the stand-in pack: train on data.parquet, predict test.parquet, score.

    python bench/heads_bench.py [--data ../shared/data/clothing] [--cache CACHE] [--head logreg]
                                [--model-out artifacts/model]

The cache is built (or resumed) with the default encoder. Training goes through the same code as
`classify train`; prediction through `classify predict`'s code path. Writes bench/results/heads.json
and prints a table. With --model-out, the trained model is also saved there (`make model` does this for
the committed artifacts/model; training is deterministic, so both give the same files).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from classifiers.artifacts import save_model  # noqa: E402
from classifiers.evaluate import bootstrap_intervals, evaluate  # noqa: E402
from classifiers.predict import Tagger, predict_cache  # noqa: E402
from classifiers.train import train  # noqa: E402
from embed.cache import read_cache  # noqa: E402
from embed.pipeline import DEFAULT_ENCODER, embed_sources  # noqa: E402
from embed.runtime import encoder_home  # noqa: E402
from report import machine, write_results  # noqa: E402  (bench/, this script's folder)

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "clothing"


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 1e6


def heads_ms_per_image(tagger: Tagger, vectors, repeats: int = 20) -> float:
    """Heads only, on the whole test batch (what a batch job pays per image after encoding)."""
    start = time.perf_counter()
    for _ in range(repeats):
        tagger.scores(vectors)
    return (time.perf_counter() - start) * 1000 / (repeats * len(vectors))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--cache", type=Path, default=encoder_home() / "caches" / f"clothing-{DEFAULT_ENCODER}-openvino-bf16")
    parser.add_argument("--head", default="logreg")
    parser.add_argument("--model-out", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "heads.json")
    args = parser.parse_args()
    if not (args.data / "images.zip").exists():
        print(f"heads_bench: {args.data}/images.zip not found (needs ../shared/data)", file=sys.stderr)
        return 1
    print(embed_sources([args.data / "images.zip"], args.cache, progress=False).line())
    embeddings = read_cache(args.cache)

    start = time.perf_counter()
    model = train(args.data / "data.parquet", embeddings, head=args.head)
    train_s = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as temp:
        model_dir = args.model_out or Path(temp) / "model"
        save_model(model, model_dir)
        artifact_mb = folder_mb(model_dir)
        tagger = Tagger.load(model_dir)
        ids = pd.read_parquet(args.data / "test.parquet")["uuid"].astype(str).tolist()
        predictions, missing = predict_cache(tagger, args.cache, ids)
        vectors, _ = embeddings.take(ids)
        ms_per_image = heads_ms_per_image(tagger, vectors)
    labels = pd.read_parquet(args.data / "test_labels.parquet")
    scores = evaluate(predictions, labels)
    result = summarise(scores, model, train_s, ms_per_image, artifact_mb, len(missing), args.head)
    result["encoder_mb"] = round(tagger.encoder().onnx_path.stat().st_size / 1e6, 1)
    result["ci95"] = bootstrap_intervals(predictions, labels)
    write_results(args.out, result)
    print_table(result)
    return 0


def summarise(scores: dict, model, train_s: float, ms: float, mb: float, missing: int, head: str) -> dict:
    tags = scores["tags"]
    return {
        "head": head,
        "top1": round(scores["category"]["top1"], 4),
        "top2": round(scores["category"]["top2"], 4),
        "top2_correct": round(scores["category"]["top2"] * scores["category"]["rows"]),
        "category_rows": scores["category"]["rows"],
        "tag_f1": {t: round(m["f1"], 4) for t, m in tags.items()},
        "tag_precision": {t: round(m["precision"], 4) for t, m in tags.items()},
        "tag_recall": {t: round(m["recall"], 4) for t, m in tags.items()},
        "tag_rows": {t: m["rows"] for t, m in tags.items()},
        "macro_tag_f1": round(scores["tags_macro"]["f1"], 4),
        "thresholds": {name: round(head.threshold, 4) for name, head in model.tags.items()},
        "train_s": round(train_s, 2),
        "predict_ms_per_image": round(ms, 4),
        "artifact_mb": round(mb, 3),
        "test_missing": missing,
        "data_fingerprint": model.info["data_fingerprint"],
        "cores": os.cpu_count(),
        "machine": machine(),  # what bench/render_docs.py names under the table
    }


def print_table(result: dict) -> None:
    print(f"| category top-1 | {result['top1']:.3f} |")
    print(f"| category top-2 | {result['top2']:.3f} |")
    for tag, f1 in result["tag_f1"].items():
        p, r = result["tag_precision"][tag], result["tag_recall"][tag]
        print(f"| {tag} P / R / F1 | {p:.3f} / {r:.3f} / {f1:.3f} |")
    print(f"| macro tag F1 | {result['macro_tag_f1']:.3f} |")
    print(f"| train all heads (s) | {result['train_s']:.1f} |")
    print(f"| heads ms / image | {result['predict_ms_per_image']:.3f} |")
    print(f"| artifact MB | {result['artifact_mb']:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
