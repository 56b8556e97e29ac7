"""Photo formats: the same photo in every listed format embeds like its JPEG; what content sniffing and the
colour-profile conversion cost.

    python bench/formats_bench.py [--images images.zip] [--photos 8] [--out bench/results/formats.json]

For each of ``--photos`` stand-in photos (upscaled to a phone-like 1600 px, saved as JPEG q95: the
reference), the JPEG's decoded pixels are saved in each listed format (tests/photo_kinds.py writes them, as the tests
do) and embedded with EfficientNet-Lite2 (ONNX Runtime fp32); the cosine to the JPEG's embedding is reported
(minimum over photos). A HEIC stored turned with EXIF orientation 6 is compared with the upright JPEG, and a
Display P3 copy with the sRGB one. Timings: ``embed.images.sniff`` on the first bytes of a file (per file),
listing a folder of suffix-less files (which reads their first bytes), and ``to_srgb`` on the resized crop.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # photo_kinds: how the tests write each format

from photo_kinds import WRITERS, encode, p3_photo, photo_as, rotated_as  # noqa: E402
from PIL import Image  # noqa: E402

from embed.images import load_pixels, sniff, to_srgb  # noqa: E402
from embed.sources import list_images, list_sources  # noqa: E402
from report import run_record, write_results  # noqa: E402  (bench/, this script's folder)

DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "clothing" / "images.zip"


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def per_call(fn, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def photos(images: Path, count: int) -> list[Image.Image]:
    refs = list_images([images])[:count]
    out = []
    for ref in refs:
        image = Image.open(io.BytesIO(ref.read())).convert("RGB")
        scale = 1600 / max(image.size)
        out.append(image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC))
    return out


def cosines(encoder, pictures: list[Image.Image]) -> dict:
    size = encoder.spec.input_size

    def embed(data: bytes) -> np.ndarray:
        return encoder.encode(load_pixels(data, size)[None])[0]

    kinds = {fmt: (lambda p, f=fmt: photo_as(p, f)) for fmt in WRITERS}
    kinds["WEBP-lossy-q90"] = lambda p: encode(p, "WEBP", quality=90)
    kinds["HEIF-rotated-exif6"] = lambda p: rotated_as(p, "HEIF")
    kinds["PNG-display-p3"] = lambda p: p3_photo(p)
    jpegs = [encode(p, "JPEG", quality=95) for p in pictures]
    # Every other format holds the JPEG's decoded pixels: the same photo, converted from the JPEG.
    sources = [Image.open(io.BytesIO(j)).convert("RGB") for j in jpegs]
    references = [embed(j) for j in jpegs]
    result = {}
    for name, make in kinds.items():
        values = [cosine(embed(make(p)), reference) for p, reference in zip(sources, references)]
        lossless = WRITERS.get(name, (None, None, False))[2]
        result[name] = {"min_cosine": round(min(values), 5), "mean_cosine": round(float(np.mean(values)), 5),
                        "lossless": lossless, "target": 0.995 if lossless else 0.97}
        print(f"{name:20s} min cosine {min(values):.4f}", file=sys.stderr)
    return result


def timings(picture: Image.Image, folder: Path) -> dict:
    heads = {fmt: photo_as(picture.resize((64, 48)), fmt)[:16] for fmt in ("JPEG", "HEIF", "AVIF", "PNG")}
    heads["text"] = b"just some text, no image at all"[:16]
    sniff_us = {name: round(per_call(lambda h=head: sniff(h), 20000) * 1e6, 2) for name, head in heads.items()}
    folder.mkdir(parents=True, exist_ok=True)
    small = photo_as(picture.resize((64, 48)), "JPEG")
    for i in range(500):
        (folder / f"photo{i}").write_bytes(small)  # no suffix: each one is sniffed while listing
    listing_ms = per_call(lambda: list_sources([folder]), 5) * 1e3
    crop = load_pixels(encode(picture, "JPEG"), 260)
    profile = Image.open(io.BytesIO(p3_photo(picture.resize((32, 32))))).info["icc_profile"]
    to_srgb(crop, profile)  # the transform is built once per distinct profile
    icc_ms = per_call(lambda: to_srgb(crop, profile), 200) * 1e3
    decode_ms = per_call(lambda: load_pixels(encode(picture, "JPEG", quality=95), 260), 20) * 1e3
    return {"sniff_us_per_file": sniff_us, "listing_500_suffixless_files_ms": round(listing_ms, 2),
            "listing_us_per_suffixless_file": round(listing_ms * 1e3 / 500, 2),
            "icc_to_srgb_ms_per_image_260px": round(icc_ms, 3), "jpeg_1600px_load_pixels_ms": round(decode_ms, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "formats.json")
    args = parser.parse_args()
    load = float(open("/proc/loadavg").read().split()[0])
    from embed.runtime import Encoder

    encoder = Encoder.load("efficientnet-lite2", threads=2, runtime="onnxruntime", precision="fp32")
    pictures = photos(args.images, args.photos)
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        result = {"cosine_to_jpeg": cosines(encoder, pictures), "timings": timings(pictures[0], Path(folder) / "x"),
                  "photos": len(pictures), "run": run_record(load)}
    write_results(args.out, result)
    print(f"formats bench: {len(pictures)} photos, {len(result['cosine_to_jpeg'])} kinds -> {args.out}")


if __name__ == "__main__":
    main()
