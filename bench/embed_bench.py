"""Benchmark the `embed` step with its default runtime: end to end, resume cost, memory, decoders, eager ratio.

    python bench/embed_bench.py [--images ../shared/data/clothing/images.zip] [--eager-images 512]

1. Runs the `embed` CLI in a subprocess over the whole archive into a fresh cache (end to end: start-up,
   reading, decoding, encoding, writing), timed from outside; its peak RSS comes from the kernel. The
   runtime, precision and decoder it used come from the cache manifest.
2. Runs it again on the finished cache (`rerun_s`: listing + skipping everything).
3. Decodes the first N images with each decoder of embed.images.DECODERS (ms per image, one thread, decode
   and resize) and compares their pixels.
4. Times an eager-PyTorch pipeline (same decode and preprocessing, same batch size, same threads) over the
   first N images in this process; the ratio is reported, not targeted.
Writes bench/results/embed.json and prints a table.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from embed.cache import read_manifest  # noqa: E402
from embed.encoders import get_encoder  # noqa: E402
from embed.images import DECODERS, load_pixels  # noqa: E402
from embed.pipeline import DEFAULT_ENCODER  # noqa: E402
from embed.sources import list_images  # noqa: E402
from report import run_record, write_results  # noqa: E402  (bench/, this script's folder)

DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "clothing" / "images.zip"


def run_cli(images: Path, cache: Path, encoder: str, batch_size: int) -> float:
    command = [sys.executable, "-m", "embed.cli", str(images), "--out", str(cache), "--quiet"]
    command += ["--encoder", encoder, "--batch-size", str(batch_size)]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    return time.perf_counter() - start


def eager_images_per_s(images: Path, encoder: str, count: int, batch_size: int) -> float:
    import numpy as np
    import torch

    from embed.export import build_embedder

    torch.set_num_threads(os.cpu_count() or 1)
    module, spec = build_embedder(get_encoder(encoder))
    refs = list_images([images])[:count]
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(refs), batch_size):
            batch = np.stack([load_pixels(ref.read(), spec.input_size) for ref in refs[i : i + batch_size]])
            module(torch.from_numpy(batch))
    return len(refs) / (time.perf_counter() - start)


def decoder_ms(images: Path, count: int, size: int) -> dict:
    """ms per image for each decoder (decode + resize, this thread, interleaved image by image so that both
    see the same machine load) and the mean absolute pixel difference between them."""
    import numpy as np

    datas = [ref.read() for ref in list_images([images])[:count]]
    seconds, diffs = dict.fromkeys(DECODERS, 0.0), []
    for data in datas:
        pixels = []
        for name in DECODERS:
            start = time.perf_counter()
            pixels.append(load_pixels(data, size, decoder=name))
            seconds[name] += time.perf_counter() - start
        diffs.append(np.abs(pixels[0].astype(np.int16) - pixels[1]).mean())
    result = {f"{name}_ms": round(seconds[name] * 1000 / len(datas), 3) for name in DECODERS}
    result["mean_abs_pixel_difference"] = round(float(np.mean(diffs)), 3)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--encoder", default=DEFAULT_ENCODER)
    parser.add_argument("--eager-images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "embed.json")
    args = parser.parse_args()
    if not args.images.exists():
        print(f"embed_bench: {args.images} not found (needs ../shared/data)", file=sys.stderr)
        return 1
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as temp:
        cache = Path(temp) / "cache"
        seconds = run_cli(args.images, cache, args.encoder, args.batch_size)
        peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        rerun_s = run_cli(args.images, cache, args.encoder, args.batch_size)
        manifest = read_manifest(cache)
        rows = manifest["rows"]
    decoders = decoder_ms(args.images, args.eager_images, get_encoder(args.encoder).input_size)
    eager = eager_images_per_s(args.images, args.encoder, args.eager_images, args.batch_size)
    ran = manifest.get("runtime", {})
    result = {
        "encoder": args.encoder,
        "runtime": ran.get("variant"),
        "ran_precision": ran.get("ran_precision"),
        "decoder": ran.get("decoder"),
        "images": rows,
        "seconds": round(seconds, 2),
        "images_per_s": round(rows / seconds, 1),
        "eager_images": args.eager_images,
        "eager_images_per_s": round(eager, 2),
        "speedup": round(rows / seconds / eager, 1),
        "rerun_s": round(rerun_s, 2),
        "decoders": decoders,
        "peak_rss_mb": round(peak_rss_mb, 1),
        "batch_size": args.batch_size,
        **run_record(load_at_start),
    }
    write_results(args.out, result)
    print_table(result)
    return 0


def print_table(result: dict) -> None:
    rows = [
        ("images encoded", result["images"]),
        (f"end-to-end img/s ({result['runtime']})", result["images_per_s"]),
        ("eager PyTorch img/s", result["eager_images_per_s"]),
        ("ratio to eager", f"{result['speedup']}x"),
        *((f"decode+resize ms/img ({name})", result["decoders"][f"{name}_ms"]) for name in DECODERS),
        ("re-run on finished cache (s)", result["rerun_s"]),
        ("peak RSS (MB)", result["peak_rss_mb"]),
    ]
    for name, value in rows:
        print(f"| {name:<33} | {value:>10} |")


if __name__ == "__main__":
    sys.exit(main())
