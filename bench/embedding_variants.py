"""Which EfficientNet-Lite2 features the heads should read: out-of-fold scores of embedding variants.

    python bench/embedding_variants.py [--data ../shared/data/clothing] [--features FEATURES.npz]

Evidence for the layout in `embed.encoders.LITE2_PARTS` and for the tag heads' columns, from the **train
split only** (group-aware 5-fold CV through the training code, `classifiers.heads`): the test split is
never read. The product's exporter (eager PyTorch) computes every candidate part once per image (about 4 min on 2 cores) into
a feature file that later runs reuse; each variant is then a choice of parts, L2-normalised part by part
and scaled as the exported embedding is. Writes bench/results/embedding_variants.json and prints tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from classifiers.heads import CategoryLogReg, TagLogReg  # noqa: E402
from classifiers.labels import DEFAULT_TAGS  # noqa: E402
from embed.encoders import get_encoder, lite2_tap  # noqa: E402
from embed.export import build_embedder  # noqa: E402
from embed.images import load_pixels  # noqa: E402
from embed.runtime import encoder_home  # noqa: E402
from embed.sources import list_images, select  # noqa: E402
from report import machine, write_results  # noqa: E402  (bench/, this script's folder)

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "clothing"
TAGS = DEFAULT_TAGS
TEXTURE = [f"{stat}{block}" for block in (3, 4, 5, 6) for stat in ("mean", "std")]
ALL = ["head", *[p for p in TEXTURE if p != "mean5"], "grid5"]  # the committed layout
# Category variants: (name, parts, CategoryLogReg parameters).
CATEGORY_VARIANTS = [
    ("head + texture statistics (the previous layout)", ["head", *TEXTURE], {}),
    ("block 5: 2x2 grid instead of its mean", ["head", *[p for p in TEXTURE if p != "mean5"], "grid5x2"], {}),
    ("block 5: 3x3 grid instead of its mean (committed)", ALL, {}),
    ("committed, L-BFGS capped at 30 instead of 20", ALL, {"max_iter": 30}),
    ("committed + block 6: 3x3 grid", [*ALL, "grid6"], {}),
    ("committed + block 4: 2x2 grid instead of its mean", [p for p in ALL if p != "mean4"] + ["grid4x2"], {}),
    ("committed without the head", [p for p in ALL if p != "head"], {}),
]
TAG_VARIANTS = [
    ("texture statistics (committed)", [p for p in TEXTURE if p != "mean5"]),
    ("texture statistics + head", ["head", *[p for p in TEXTURE if p != "mean5"]]),
    ("texture statistics + head + grid", ALL),
]


# Every candidate part, tapped by the product's exporter (embed.export.LiteEmbedder): the bench computes the
# parts exactly as an exported graph would.
CANDIDATES = (lite2_tap("head"), *(lite2_tap(stat, block) for block in (3, 4, 5, 6) for stat in ("mean", "std")),
              lite2_tap("grid", 4, cells=2), lite2_tap("grid", 5, cells=2), lite2_tap("grid", 5), lite2_tap("grid", 6))


def candidate_embedder():
    """The Lite2 network tapped at every candidate part (only its ``features`` are used: the raw parts)."""
    spec = dataclasses.replace(get_encoder("efficientnet-lite2"), parts=CANDIDATES,
                               dim=sum(part.width for part in CANDIDATES), pooling="every candidate part")
    return build_embedder(spec)[0], spec


def compute_features(images: Path, uuids: list[str], batch: int = 32) -> dict[str, np.ndarray]:
    module, spec = candidate_embedder()
    refs, missing = select(list_images([images]), uuids)
    if missing:
        raise SystemExit(f"{len(missing)} labelled uuids have no image in {images}")
    parts: dict[str, list] = {}
    started = time.perf_counter()
    for start in range(0, len(refs), batch):
        pixels = np.stack([load_pixels(ref.read(), spec.input_size) for ref in refs[start : start + batch]])
        with torch.inference_mode():
            found = module.features(torch.from_numpy(pixels))
        for name, value in found.items():
            parts.setdefault(name, []).append(value.numpy())
    print(f"features: {len(refs)} images in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return {"uuid": np.array([ref.uuid for ref in refs]), **{k: np.concatenate(v) for k, v in parts.items()}}


def embedding(features: dict[str, np.ndarray], parts: list[str], rows: np.ndarray) -> np.ndarray:
    """The chosen parts, each L2-normalised, concatenated and scaled to unit norm (as the ONNX graph does)."""
    chosen = [features[p][rows].astype(np.float32) for p in parts]
    chosen = [p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12) for p in chosen]
    return np.concatenate(chosen, axis=1) / np.sqrt(len(chosen))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--features", type=Path, default=encoder_home() / "caches" / "lite2-variants-train.npz")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "embedding_variants.json")
    args = parser.parse_args()
    labels = pd.read_parquet(args.data / "data.parquet")  # the train split: the test split is not read
    if args.features.exists():
        features = dict(np.load(args.features))
    else:
        zipfile.ZipFile(args.data / "images.zip").close()  # fail early on a missing archive
        features = compute_features(args.data / "images.zip", labels["uuid"].astype(str).tolist())
        args.features.parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.features, **features)
    row_of = {uuid: i for i, uuid in enumerate(features["uuid"])}

    result = {"split": "train only", "folds": "group-aware 5-fold (classifiers.heads)", "category": [], "tags": []}
    known = labels[labels["cc3"].notna()]
    rows, groups = np.array([row_of[u] for u in known["uuid"]]), known["group"].to_numpy()
    for name, parts, params in CATEGORY_VARIANTS:
        X = embedding(features, parts, rows)
        started = time.perf_counter()
        cv = CategoryLogReg(**params).fit(X, known["cc3"].to_numpy(), groups).cv_
        result["category"].append({"variant": name, "columns": X.shape[1], "logloss": round(cv["logloss"], 4),
                                   "top1": round(cv["top1"], 4), "top2": round(cv["top2"], 4),
                                   "seconds": round(time.perf_counter() - started, 1)})
    tagged = labels[labels[list(TAGS)].notna().all(axis=1)]
    rows, groups = np.array([row_of[u] for u in tagged["uuid"]]), tagged["group"].to_numpy()
    for name, parts in TAG_VARIANTS:
        X = embedding(features, parts, rows)
        started = time.perf_counter()
        f1 = {tag: round(TagLogReg(tag).fit(X, tagged[tag].to_numpy(), groups).cv_["f1"], 4) for tag in TAGS}
        result["tags"].append({"variant": name, "columns": X.shape[1], "f1": f1,
                               "seconds": round(time.perf_counter() - started, 1)})

    write_results(args.out, {**result, "machine": machine()})
    print(pd.DataFrame(result["category"]).to_string(index=False))
    print()
    print(pd.DataFrame([{**{k: v for k, v in r.items() if k != "f1"}, **r["f1"]} for r in result["tags"]])
          .to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
