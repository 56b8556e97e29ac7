"""Deterministic synthetic dataset in the layout of the Vinted ML homework.

``make demo`` needs data it can make itself, so this module draws garment
silhouettes (one shape per category) filled with a plain colour or with one
pattern (polka dot, floral, checker) and writes them exactly like the real
assignment files:

    OUT/data.zip            images as data/<uuid>.jpg (train and test rows)
    OUT/data.parquet        uuid, cc3, color1, polka dot, floral, checker
    OUT/test.parquet        uuid (the test rows)
    OUT/test_labels.parquet same columns as data.parquet, for the test rows
    OUT/demo_params.json    parameters, written last: marks a complete set

The same seed gives byte-identical files. Usage:

    python -m devtools.demo_data OUT_DIR [--train N] [--test N] [--seed S]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import string
import sys
import time
import zipfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

from classifiers.labels import DEFAULT_TAGS
from vinted_tagger.files import atomic_path, write_bytes, write_parquet

# Label counts of the real assignment data; only their ratios are used.
CATEGORY_COUNTS = {
    "BLOUSES": 1168,
    "CASUAL_DRESSES": 607,
    "MINI_DRESSES": 577,
    "SHIRTS": 571,
    "TANK_TOPS": 624,
}
CATEGORIES = tuple(CATEGORY_COUNTS)
TAGS = DEFAULT_TAGS
NO_TAG = ""
TAG_COUNTS = {NO_TAG: 952, **dict(zip(TAGS, (936, 850, 809)))}  # polka dot, floral, checker

COLORS = {
    "BLACK": (32, 32, 36),
    "BLUE": (45, 95, 205),
    "GREEN": (40, 140, 70),
    "GREY": (135, 135, 140),
    "NAVY": (28, 38, 95),
    "PINK": (240, 150, 185),
    "RED": (200, 35, 45),
    "WHITE": (246, 246, 242),
    "YELLOW": (242, 208, 55),
    "BURGUNDY": (120, 22, 48),
}
# Pattern inks; one is picked per image that stands out from the base colour.
INKS = (
    (250, 250, 250), (20, 20, 24), (255, 235, 120), (30, 40, 110),
    (255, 190, 210), (120, 20, 50), (150, 210, 255), (20, 90, 40),
    (230, 60, 60), (110, 50, 150),
)
IMAGE_SIZES = (
    (320, 240), (240, 320), (300, 300), (320, 280),
    (280, 320), (260, 260), (300, 240), (240, 300),
)
JPEG_QUALITY = 90
MASK_SUPERSAMPLE = 2  # mask drawn at 2x and shrunk, for smooth garment edges
COLUMNS = ("uuid", "cc3", "color1") + TAGS
OUTPUT_FILES = ("data.zip", "data.parquet", "test.parquet", "test_labels.parquet")
PARAMS_FILE = "demo_params.json"
FORMAT_VERSION = 1  # bump when the drawing changes so old sets are redone
UUID_ALPHABET = np.array(list(string.ascii_letters + string.digits))
HEX_ALPHABET = np.array(list("0123456789abcdef"))

Point = tuple[float, float]
Polygon = list[Point]
Colour = tuple[int, int, int]


# ---------------------------------------------------------------- labels


def allocate(n: int, weights: Sequence[int]) -> list[int]:
    """Split n into integer counts proportional to weights (largest remainder)."""
    total = sum(weights)
    exact = [n * w / total for w in weights]
    counts = [math.floor(e) for e in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: counts[i] - exact[i])
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return counts


def shuffled_labels(rng: np.random.Generator, n: int, counts: dict[str, int]) -> list[str]:
    """n labels in the proportions of counts, in random order."""
    names = list(counts)
    labels = [name for name, k in zip(names, allocate(n, list(counts.values()))) for _ in range(k)]
    return [labels[i] for i in rng.permutation(n)]


def make_uuids(rng: np.random.Generator, n: int, taken: set[str]) -> list[str]:
    """Unique ids shaped like the real ones: 5 hex chars, '_', 24 alphanumerics."""
    uuids: list[str] = []
    while len(uuids) < n:
        head = "".join(rng.choice(HEX_ALPHABET, 5))
        tail = "".join(rng.choice(UUID_ALPHABET, 24))
        uuid = f"{head}_{tail}"
        if uuid not in taken:
            taken.add(uuid)
            uuids.append(uuid)
    return uuids


def make_rows(rng: np.random.Generator, n: int, taken: set[str]) -> list[dict]:
    """Label rows for one split; each split gets the target proportions."""
    uuids = make_uuids(rng, n, taken)
    categories = shuffled_labels(rng, n, CATEGORY_COUNTS)
    tags = shuffled_labels(rng, n, TAG_COUNTS)
    colours = rng.choice(list(COLORS), n)
    rows = []
    for uuid, category, tag, colour in zip(uuids, categories, tags, colours):
        row = {"uuid": uuid, "cc3": category, "color1": str(colour)}
        row.update({t: int(t == tag) for t in TAGS})
        rows.append(row)
    return rows


def row_tag(row: dict) -> str:
    return next((t for t in TAGS if row[t]), NO_TAG)


# ---------------------------------------------------------------- shapes
# Garments live in "garment units": x centred on 0, y going down from the
# shoulders. Each shape is built from its right half and mirrored.


def arc(rx: float, ry: float, start_deg: float, end_deg: float, steps: int = 8) -> Polygon:
    angles = np.radians(np.linspace(start_deg, end_deg, steps))
    return [(rx * math.cos(a), ry * math.sin(a)) for a in angles]


def mirrored(right_half: Polygon) -> Polygon:
    """Close a right half (top centre -> bottom centre) into a symmetric polygon."""
    return right_half + [(-x, y) for x, y in reversed(right_half)]


def pair(right: Polygon) -> list[Polygon]:
    return [right, [(-x, y) for x, y in right]]


def neck(rx: float, depth: float) -> Polygon:
    """Neckline from its lowest point up to the right shoulder seam."""
    return arc(rx, depth, 90, 0)


def blouse() -> tuple[list[Polygon], list[Polygon]]:
    body = mirrored(neck(0.10, 0.085) + [(0.24, 0.045), (0.26, 0.23), (0.31, 0.60), (0.16, 0.615), (0, 0.62)])
    sleeve = [(0.22, 0.03), (0.31, 0.07), (0.40, 0.30), (0.47, 0.53), (0.44, 0.585),
              (0.37, 0.60), (0.33, 0.45), (0.26, 0.25)]
    return pair(sleeve) + [body], []


def shirt() -> tuple[list[Polygon], list[Polygon]]:
    body = mirrored(neck(0.075, 0.05) + [(0.23, 0.035), (0.235, 0.22), (0.235, 0.60),
                                          (0.17, 0.655), (0.08, 0.685), (0, 0.69)])
    sleeve = [(0.22, 0.03), (0.30, 0.06), (0.40, 0.56), (0.33, 0.58), (0.245, 0.23)]
    cuff = [(0.40, 0.56), (0.415, 0.625), (0.34, 0.645), (0.33, 0.58)]
    collar = [(0.005, 0.055), (0.08, -0.02), (0.12, 0.02), (0.055, 0.14)]
    placket = [[(0.0, 0.06), (0.0, 0.69)]]
    return pair(sleeve) + pair(cuff) + [body] + pair(collar), placket


def tank_top() -> tuple[list[Polygon], list[Polygon]]:
    body = mirrored(neck(0.095, 0.17) + [(0.14, 0.0), (0.15, 0.07), (0.17, 0.14), (0.21, 0.19),
                                          (0.245, 0.21), (0.25, 0.40), (0.26, 0.61), (0, 0.61)])
    return [body], []


def casual_dress() -> tuple[list[Polygon], list[Polygon]]:
    body = mirrored(neck(0.09, 0.08) + [(0.19, 0.035), (0.20, 0.20), (0.16, 0.40), (0.22, 0.62),
                                         (0.36, 1.30), (0.18, 1.32), (0, 1.33)])
    sleeve = [(0.18, 0.03), (0.26, 0.07), (0.32, 0.22), (0.24, 0.26), (0.20, 0.20)]
    waist = [[(-0.16, 0.40), (0.16, 0.40)]]
    return pair(sleeve) + [body], waist


def mini_dress() -> tuple[list[Polygon], list[Polygon]]:
    body = mirrored(neck(0.08, 0.10) + [(0.14, 0.0), (0.155, 0.08), (0.18, 0.15), (0.20, 0.18),
                                         (0.16, 0.36), (0.42, 0.78), (0.32, 0.80), (0.21, 0.785),
                                         (0.10, 0.805), (0, 0.795)])
    waist = [[(-0.16, 0.36), (0.16, 0.36)]]
    return [body], waist


SHAPES: dict[str, Callable[[], tuple[list[Polygon], list[Polygon]]]] = {
    "BLOUSES": blouse,
    "CASUAL_DRESSES": casual_dress,
    "MINI_DRESSES": mini_dress,
    "SHIRTS": shirt,
    "TANK_TOPS": tank_top,
}


def placement(rng: np.random.Generator, parts: list[Polygon], width: int, height: int
              ) -> tuple[Callable[[Polygon], list[Point]], float]:
    """Random scale, slight rotation and offset that fit the garment in the image."""
    xs = [x for part in parts for x, _ in part]
    ys = [y for part in parts for _, y in part]
    cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    box_w, box_h = max(xs) - min(xs), max(ys) - min(ys)
    angle = math.radians(rng.uniform(-8, 8))
    cos, sin = math.cos(angle), math.sin(angle)
    # Size of the rotated box, so the garment is never cut off by the frame.
    turned_w = box_w * abs(cos) + box_h * abs(sin)
    turned_h = box_w * abs(sin) + box_h * abs(cos)
    scale = rng.uniform(0.68, 0.9) * min(width / turned_w, height / turned_h)
    ox = width / 2 + rng.uniform(-0.45, 0.45) * (width - scale * turned_w)
    oy = height / 2 + rng.uniform(-0.45, 0.45) * (height - scale * turned_h)

    def to_pixels(points: Polygon) -> list[Point]:
        out = []
        for x, y in points:
            dx, dy = (x - cx) * scale, (y - cy) * scale
            out.append((ox + dx * cos - dy * sin, oy + dx * sin + dy * cos))
        return out

    return to_pixels, scale


# ---------------------------------------------------------------- colours


def jitter(rng: np.random.Generator, colour: Colour, amount: int = 12) -> Colour:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def luminance(colour: Colour) -> float:
    red, green, blue = colour
    return 0.299 * red + 0.587 * green + 0.114 * blue


def pick_ink(rng: np.random.Generator, base: Colour) -> Colour:
    """An ink that stands out clearly from the base colour."""
    def far(ink: Colour, other: Colour) -> bool:
        # Hue distance alone is not enough: yellow on light blue looks flat.
        distance = float(np.linalg.norm(np.subtract(ink, other)))
        return distance > 150 and abs(luminance(ink) - luminance(other)) > 60

    choices = [ink for ink in INKS if far(ink, base)]
    if not choices:
        return (250, 250, 250) if luminance(base) < 128 else (20, 20, 24)
    return choices[rng.integers(len(choices))]


def darker(colour: Colour, factor: float = 0.55) -> Colour:
    return tuple(int(c * factor) for c in colour)


# ---------------------------------------------------------------- patterns
# Patterns fill the whole canvas; the garment mask later keeps them inside.


def polka_dots(rng: np.random.Generator, canvas: Image.Image, base: Colour) -> None:
    draw = ImageDraw.Draw(canvas)
    ink = pick_ink(rng, base)
    step = rng.uniform(14, 24)
    radius = step * rng.uniform(0.18, 0.30)
    stagger = rng.random() < 0.6
    x0, y0 = rng.uniform(0, step, 2)
    width, height = canvas.size
    for row, y in enumerate(np.arange(y0 - step, height + step, step)):
        shift = step / 2 if stagger and row % 2 else 0
        for x in np.arange(x0 - step + shift, width + step, step):
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=ink)


def flower(draw: ImageDraw.ImageDraw, x: float, y: float, size: float, turn: float,
           petals: int, petal_ink: Colour, centre_ink: Colour) -> None:
    petal_r = size * 0.42
    for k in range(petals):
        a = turn + 2 * math.pi * k / petals
        px, py = x + size * 0.55 * math.cos(a), y + size * 0.55 * math.sin(a)
        draw.ellipse([px - petal_r, py - petal_r, px + petal_r, py + petal_r], fill=petal_ink)
    centre_r = size * 0.28
    draw.ellipse([x - centre_r, y - centre_r, x + centre_r, y + centre_r], fill=centre_ink)


def florals(rng: np.random.Generator, canvas: Image.Image, base: Colour) -> None:
    draw = ImageDraw.Draw(canvas)
    petal_ink = pick_ink(rng, base)
    centre_ink = pick_ink(rng, petal_ink)
    step = rng.uniform(26, 38)
    size = step * rng.uniform(0.26, 0.34)
    petals = int(rng.integers(5, 7))
    width, height = canvas.size
    for y in np.arange(-step / 2, height + step, step):
        for x in np.arange(-step / 2, width + step, step):
            jx, jy = rng.uniform(-0.25, 0.25, 2) * step
            flower(draw, x + jx, y + jy, size * rng.uniform(0.8, 1.15), rng.uniform(0, math.pi),
                   petals, petal_ink, centre_ink)


def checks(rng: np.random.Generator, canvas: Image.Image, base: Colour) -> Image.Image:
    """Checkerboard or gingham grid (a gingham has half-tone bands)."""
    ink = np.array(pick_ink(rng, base), dtype=np.float32)
    step = rng.uniform(10, 20)
    width, height = canvas.size
    phase_x, phase_y = rng.uniform(0, step, 2)
    band_x = ((np.arange(width) + phase_x) // step % 2).astype(bool)[None, :]
    band_y = ((np.arange(height) + phase_y) // step % 2).astype(bool)[:, None]
    pixels = np.asarray(canvas, dtype=np.float32).copy()
    if rng.random() < 0.5:
        pixels[band_x ^ band_y] = ink
    else:
        half = (pixels + ink) / 2
        either = band_x | band_y
        pixels[either] = half[either]
        pixels[band_x & band_y] = ink
    return Image.fromarray(pixels.astype(np.uint8))


def fabric(rng: np.random.Generator, size: tuple[int, int], base: Colour, tag: str) -> Image.Image:
    canvas = Image.new("RGB", size, base)
    if tag == "polka dot":
        polka_dots(rng, canvas, base)
    elif tag == "floral":
        florals(rng, canvas, base)
    elif tag == "checker":
        canvas = checks(rng, canvas, base)
    return canvas


# ---------------------------------------------------------------- images


def background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A light two-colour gradient in a random direction."""
    start = rng.uniform(175, 245, 3)
    end = np.clip(start + rng.uniform(-35, 35, 3), 150, 255)
    angle = rng.uniform(0, 2 * math.pi)
    # Built small and stretched: a smooth gradient loses nothing and is much cheaper.
    ramp = np.linspace(0, 1, 16)
    t = ramp[None, :] * math.cos(angle) + ramp[:, None] * math.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    pixels = start * (1 - t[..., None]) + end * t[..., None]
    small = Image.fromarray(pixels.astype(np.uint8))
    return small.resize((width, height), Image.Resampling.BILINEAR)


def add_light_and_noise(rng: np.random.Generator, image: Image.Image) -> Image.Image:
    """Uneven lighting and sensor-like noise, so no two images are clean copies."""
    pixels = np.asarray(image, dtype=np.float32)
    height, width = pixels.shape[:2]
    dark_end, bright_end = rng.uniform(0.88, 1.0), rng.uniform(0.97, 1.06)
    if rng.random() < 0.5:
        light = np.linspace(dark_end, bright_end, width, dtype=np.float32)[None, :, None]
    else:
        light = np.linspace(dark_end, bright_end, height, dtype=np.float32)[:, None, None]
    # One noise value per pixel for all channels: a third of the cost, looks the same.
    noise = rng.standard_normal((height, width, 1), dtype=np.float32) * np.float32(rng.uniform(2, 6))
    pixels *= light
    pixels += noise
    np.clip(pixels, 0, 255, out=pixels)
    return Image.fromarray(pixels.astype(np.uint8))


def garment_mask(parts: list[Polygon], to_pixels: Callable[[Polygon], list[Point]],
                 width: int, height: int) -> Image.Image:
    k = MASK_SUPERSAMPLE
    mask = Image.new("L", (width * k, height * k), 0)
    draw = ImageDraw.Draw(mask)
    for part in parts:
        draw.polygon([(x * k, y * k) for x, y in to_pixels(part)], fill=255)
    return mask.reduce(k)


def draw_garment(rng: np.random.Generator, category: str, colour: str, tag: str,
                 width: int, height: int) -> Image.Image:
    parts, details = SHAPES[category]()
    to_pixels, scale = placement(rng, parts, width, height)
    base = jitter(rng, COLORS[colour])
    line = darker(base) if luminance(base) > 50 else (95, 95, 100)
    mask = garment_mask(parts, to_pixels, width, height)
    image = Image.composite(fabric(rng, (width, height), base, tag), background(rng, width, height), mask)
    draw = ImageDraw.Draw(image)
    for part in parts:
        draw.polygon(to_pixels(part), outline=line, width=2)
    for polyline in details:
        draw.line(to_pixels(polyline), fill=line, width=2)
    if category == "SHIRTS":
        draw_buttons(draw, to_pixels, scale, line)
    return add_light_and_noise(rng, image)


def draw_buttons(draw: ImageDraw.ImageDraw, to_pixels: Callable[[Polygon], list[Point]],
                 scale: float, colour: Colour) -> None:
    radius = max(0.012 * scale, 2.0)
    for x, y in to_pixels([(0.0, y) for y in np.arange(0.18, 0.66, 0.1)]):
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=(235, 235, 225),
                     outline=colour, width=1)


def render_jpeg(row: dict, seed: int, index: int) -> bytes:
    """JPEG bytes for one row; its own RNG keeps images independent of row order."""
    rng = np.random.default_rng([seed, index])
    width, height = IMAGE_SIZES[rng.integers(len(IMAGE_SIZES))]
    image = draw_garment(rng, row["cc3"], row["color1"], row_tag(row), width, height)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


# ---------------------------------------------------------------- files


def write_zip(path: Path, rows: list[dict], seed: int) -> None:
    indexed = sorted(enumerate(rows), key=lambda item: item[1]["uuid"])
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for index, row in indexed:
            # Fixed timestamp: the archive must not change between runs.
            info = zipfile.ZipInfo(f"data/{row['uuid']}.jpg", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, render_jpeg(row, seed, index))


def labels_table(rows: list[dict], columns: Sequence[str] = COLUMNS) -> pa.Table:
    types = {"uuid": pa.string(), "cc3": pa.string(), "color1": pa.string()}
    schema = pa.schema([(c, types.get(c, pa.int64())) for c in columns])
    return pa.Table.from_pydict({c: [row[c] for row in rows] for c in columns}, schema=schema)


def check_params(n_train: int, n_test: int, seed: int) -> dict:
    if n_train < 1 or n_test < 0 or seed < 0:
        raise ValueError(f"need n_train >= 1, n_test >= 0, seed >= 0; got {n_train}, {n_test}, {seed}")
    return {"n_train": int(n_train), "n_test": int(n_test), "seed": int(seed), "version": FORMAT_VERSION}


def is_complete(out_dir: Path, params: dict) -> bool:
    """True if out_dir already holds every file of a set made with params."""
    params_path = out_dir / PARAMS_FILE
    if not params_path.is_file() or not all((out_dir / f).is_file() for f in OUTPUT_FILES):
        return False
    try:
        return json.loads(params_path.read_text()) == params
    except (OSError, ValueError):
        return False


def ensure_dataset(out_dir: Path, params: dict) -> bool:
    """Generate the set unless it is already there; returns True if it generated."""
    if is_complete(out_dir, params):
        return False
    out_dir.mkdir(parents=True, exist_ok=True)
    # Removed first: an interrupted regeneration must not look complete.
    (out_dir / PARAMS_FILE).unlink(missing_ok=True)
    rng = np.random.default_rng(params["seed"])
    taken: set[str] = set()
    train = make_rows(rng, params["n_train"], taken)
    test = make_rows(rng, params["n_test"], taken)
    with atomic_path(out_dir / "data.zip") as tmp:
        write_zip(tmp, train + test, params["seed"])
    write_parquet(labels_table(train), out_dir / "data.parquet")
    write_parquet(labels_table(test, ["uuid"]), out_dir / "test.parquet")
    write_parquet(labels_table(test), out_dir / "test_labels.parquet")
    write_bytes(out_dir / PARAMS_FILE, (json.dumps(params, sort_keys=True) + "\n").encode())
    return True


def make_demo_dataset(out_dir: str | os.PathLike, n_train: int = 600, n_test: int = 150,
                      seed: int = 0) -> Path:
    """Write the synthetic dataset to out_dir (skipped if already there); returns out_dir."""
    out = Path(out_dir)
    ensure_dataset(out, check_params(n_train, n_test, seed))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a synthetic Vinted-style demo dataset.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--train", type=int, default=600, help="training rows (default 600)")
    parser.add_argument("--test", type=int, default=150, help="test rows (default 150)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    try:
        params = check_params(args.train, args.test, args.seed)
    except ValueError as error:
        parser.error(str(error))
    start = time.perf_counter()
    made = ensure_dataset(args.out_dir, params)
    what = f"{args.train} train + {args.test} test rows, seed {args.seed}"
    if made:
        print(f"demo data: wrote {what} to {args.out_dir} in {time.perf_counter() - start:.1f}s")
    else:
        print(f"demo data: {args.out_dir} already holds {what}; skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
