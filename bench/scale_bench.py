"""Benchmark scaling out: local vs Ray engine, appending to a big cache, streaming prediction over it.

    python bench/scale_bench.py [--images ../shared/data/clothing/images.zip] [--limit N] [--rows 200000]
                                [--parts engines,appends,predict] [--out bench/results/scale.json]

1. Embeds the stand-in images (all 8,860, or the first --limit) with the local engine, then with the Ray
   engine on a local Ray cluster started beforehand (as a running cluster would be: Ray Data's own actors
   already up, started by a one-row dataset before the clock starts), same machine, same encoder variant,
   fresh caches; three rounds, medians: ``local_images_per_s``, ``ray_images_per_s``, ``ray_over_local``,
   and the largest difference between the first round's two caches' embeddings.
2. Builds a synthetic cache of --rows rows (EfficientNet-Lite2's 4,480-d, random unit vectors, 1,024-row
   parts), then times appending 10,000 new rows to it (``append_10k_s``) and to an empty cache
   (``append_10k_empty_s``): opening the writer, finding which uuids are missing, writing the parts; three
   appends to each, alternated, medians. Dirty pages are flushed (``os.sync``, not timed) before each, so
   that none pays the disk writes of the 3.6 GB built just before it.
3. Runs ``classify predict --cache`` over the synthetic cache (then 230,000 rows) in a subprocess with the
   committed model, after an untimed ``os.sync``: ``predict_peak_rss_mb`` (the child's own, from ``wait4``)
   and ``predict_rows_per_s`` (rows / the command's wall time).
Writes bench/results/scale.json and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from classifiers.artifacts import DEFAULT_MODEL_DIR, load_model  # noqa: E402
from embed.cache import CacheWriter, read_cache  # noqa: E402
from embed.encoders import EncoderSpec  # noqa: E402
from embed.pipeline import EncoderChoice, embed_sources  # noqa: E402
from embed.runtime import BATCH_SIZE  # noqa: E402
from embed.sources import list_images  # noqa: E402
from report import run_record, write_results  # noqa: E402  (bench/, this script's folder)

DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "clothing" / "images.zip"
APPEND_ROWS = 10_000
ENGINE_ROUNDS = 3  # local and Ray runs, alternated; their medians are reported
APPEND_ROUNDS = 3  # appends to each cache, alternated; their medians are reported
PARTS = ("engines", "appends", "predict")


def engines(images: Path, limit: int | None, work: Path, batch_size: int) -> dict:
    """ENGINE_ROUNDS rounds of: the local engine (no Ray running), then the Ray engine on a fresh local
    cluster; each into a fresh cache. Medians: one run's rate varies between runs (every round is kept)."""
    import ray

    from embed.engines.ray import start_local

    ids = None if limit is None else [ref.uuid for ref in list_images([images])[:limit]]
    rates: dict[str, list[float]] = {"local": [], "ray": []}
    encoder = EncoderChoice(batch_size=batch_size)
    for round_ in range(ENGINE_ROUNDS):
        local = embed_sources([images], work / f"local-{round_}", encoder, ids, progress=False)
        start_local(ray, num_cpus=os.cpu_count())  # loopback only
        try:
            ray.data.range(1).materialize()  # starts Ray Data's stats and coordinator actors, as on a used cluster
            distributed = embed_sources([images], work / f"ray-{round_}", encoder, ids, "ray", progress=False)
        finally:
            ray.shutdown()
        rates["local"].append(local.images_per_s)
        rates["ray"].append(distributed.images_per_s)
    a, b = read_cache(work / "local-0"), read_cache(work / "ray-0")
    order_a, order_b = np.argsort(a.uuids), np.argsort(b.uuids)
    assert (a.uuids[order_a] == b.uuids[order_b]).all(), "the engines cached different uuids"
    local_rate, ray_rate = float(np.median(rates["local"])), float(np.median(rates["ray"]))
    return {
        "images": local.encoded,
        "engine_rounds": ENGINE_ROUNDS,
        "local_images_per_s": round(local_rate, 1),
        "ray_images_per_s": round(ray_rate, 1),
        "ray_over_local": round(ray_rate / local_rate, 3),
        "local_runs_images_per_s": [round(r, 1) for r in rates["local"]],
        "ray_runs_images_per_s": [round(r, 1) for r in rates["ray"]],
        "ray_vs_local_max_abs_diff": float(np.abs(a.vectors[order_a] - b.vectors[order_b]).max()),
        "failed": local.failed,
    }


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def fill(folder: Path, spec: EncoderSpec, start: int, n: int, rng: np.random.Generator, runtime: dict) -> float:
    """Append rows ``start..start+n`` the way ``embed`` does; returns the seconds it took."""
    os.sync()
    began = time.perf_counter()
    with CacheWriter(folder, spec, versions={}, runtime=runtime) as writer:
        chunk = 1024
        wanted = writer.missing(f"syn{i:09d}" for i in range(start, start + n))
        for i in range(0, len(wanted), chunk):
            names = wanted[i : i + chunk]
            writer.add(names, unit_rows(rng, len(names), spec.dim))
    return time.perf_counter() - began


def appends(spec: EncoderSpec, runtime: dict, rows: int, work: Path) -> dict:
    """Median of APPEND_ROUNDS appends to each, alternated: a 10,000-row append is mostly writing 180 MB, and
    one write's time varies with the disk by more than the difference being measured."""
    rng = np.random.default_rng(0)
    big = work / "synthetic"
    build_s = fill(big, spec, 0, rows, rng, runtime)
    to_big, to_empty = [], []
    for round_ in range(APPEND_ROUNDS):
        start = rows + round_ * APPEND_ROWS
        to_big.append(fill(big, spec, start, APPEND_ROWS, rng, runtime))
        empty = work / f"empty-{round_}"
        to_empty.append(fill(empty, spec, start, APPEND_ROWS, rng, runtime))
        shutil.rmtree(empty)
    append_big, append_empty = float(np.median(to_big)), float(np.median(to_empty))
    return {"synthetic_rows": rows, "synthetic_build_s": round(build_s, 2), "append_rounds": APPEND_ROUNDS,
            "append_10k_s": round(append_big, 3), "append_10k_empty_s": round(append_empty, 3),
            "append_ratio": round(append_big / append_empty, 3)}


def predict(cache: Path, rows: int, work: Path) -> dict:
    out = work / "predictions.parquet"
    command = [sys.executable, "-m", "classifiers", "predict", "--cache", str(cache), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    os.sync()  # not timed: the appends' dirty pages are written before, not during, the command
    began = time.perf_counter()
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: nothing reads while the child runs
        child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=errors)
        # wait4: this child's own peak RSS (RUSAGE_CHILDREN would be the largest of every child so far, the Ray
        # processes of the engines part included).
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - began
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode:
            errors.seek(0)
            raise RuntimeError(f"classify predict failed ({child.returncode}): {errors.read()[-2000:].decode()}")
    peak_kb = usage.ru_maxrss
    return {"predict_seconds": round(seconds, 2), "predict_rows_per_s": round(rows / seconds),
            "predict_peak_rss_mb": round(peak_kb / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--limit", type=int, default=None, help="embed only the first N images (a quick run)")
    parser.add_argument("--rows", type=int, default=200_000, help="rows of the synthetic cache")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of: {', '.join(PARTS)}")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale.json")
    args = parser.parse_args()
    parts = args.parts.split(",")
    if unknown := sorted(set(parts) - set(PARTS)):
        parser.error(f"unknown parts {unknown}; valid: {', '.join(PARTS)}")
    if not args.images.exists():
        sys.exit(f"scale_bench: {args.images} not found; pass --images")
    load_at_start = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="scale-bench-", dir=args.work))
    try:
        model = load_model(DEFAULT_MODEL_DIR)
        # The synthetic rows claim the committed model's runtime, so that predict accepts them.
        spec, runtime = EncoderSpec.from_dict(model.encoder), model.info.get("runtime", {})
        result = {"images_source": args.images.name, "limit": args.limit, "batch_size": args.batch_size}
        if "engines" in parts:
            result.update(engines(args.images, args.limit, work, args.batch_size))
        if {"appends", "predict"} & set(parts):
            result.update(appends(spec, runtime, args.rows, work))
        if "predict" in parts:  # the synthetic cache now holds rows + the appended rows
            result.update(predict(work / "synthetic", args.rows + APPEND_ROUNDS * APPEND_ROWS, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.update(run_record(load_at_start))
    write_results(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
