"""Image statistics for the EDA: what the photos in a source look like before any model sees them.

``image_stats`` reads every image of a source (zip, folder or file, as ``embed`` does) and returns one row
per image: file size and format, stored size and EXIF orientation, displayed size and aspect ratio, and
colour statistics computed on a small thumbnail (brightness, contrast, saturation, mean RGB, share of
near-white pixels). ``preprocessing_stages`` shows step by step what the encoder receives for one image.
"""

from __future__ import annotations

import colorsys
import hashlib
import io
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from embed.images import ImageError, decode, resize_shorter_crop, to_rgb
from embed.sources import ImageRef, list_images, select

EXIF_ORIENTATION = 274  # the EXIF tag that says how a phone held the camera
THUMB = 64  # colour statistics are computed on a thumbnail of this size: cheap and stable
WHITE_LEVEL = 235  # a pixel is "near white" when all three channels are at least this bright

STAT_COLUMNS = [
    "uuid", "format", "file_kb", "sha1", "stored_width", "stored_height", "exif_orientation",
    "width", "height", "aspect", "megapixels", "brightness", "contrast", "saturation",
    "mean_r", "mean_g", "mean_b", "white_share", "error",
]


def _one(ref: ImageRef) -> dict:
    row: dict = {"uuid": ref.uuid}
    try:
        data = ref.read()
        row["file_kb"] = len(data) / 1024
        row["sha1"] = hashlib.sha1(data).hexdigest()
        raw = Image.open(io.BytesIO(data))
        row["format"] = raw.format
        row["stored_width"], row["stored_height"] = raw.size
        row["exif_orientation"] = int(raw.getexif().get(EXIF_ORIENTATION, 1) or 1)
        image = decode(data)  # EXIF-transposed RGB, exactly as the encoder's input starts
    except (ImageError, OSError) as error:
        row["error"] = str(error)
        return row
    row["width"], row["height"] = image.size
    row["aspect"] = image.width / image.height
    row["megapixels"] = image.width * image.height / 1e6
    row.update(colour_stats(image))
    row["error"] = None
    return row


def colour_stats(image: Image.Image) -> dict:
    """Brightness (mean luma 0-255), contrast (luma std), saturation (HSV mean 0-1), mean RGB, white share."""
    thumb = image.copy()
    thumb.thumbnail((THUMB, THUMB), Image.BILINEAR)
    rgb = np.asarray(thumb, dtype=np.float32)
    luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    hsv = np.asarray(thumb.convert("HSV"), dtype=np.float32)
    return {
        "brightness": float(luma.mean()),
        "contrast": float(luma.std()),
        "saturation": float(hsv[..., 1].mean() / 255.0),
        "mean_r": float(rgb[..., 0].mean()),
        "mean_g": float(rgb[..., 1].mean()),
        "mean_b": float(rgb[..., 2].mean()),
        "white_share": float((rgb.min(axis=-1) >= WHITE_LEVEL).mean()),
    }


def image_stats(
    sources: Iterable[str | Path] | str | Path, ids: Iterable[str] | None = None, threads: int = 2
) -> pd.DataFrame:
    """One row of statistics per image of ``sources`` (restricted to ``ids``, in their order if given)."""
    if isinstance(sources, (str, Path)):
        sources = [sources]
    refs, _ = select(list_images(sources), ids)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        rows = list(pool.map(_one, refs))
    return pd.DataFrame(rows).reindex(columns=STAT_COLUMNS)


def exact_duplicates(stats: pd.DataFrame) -> pd.DataFrame:
    """Groups of byte-identical files: ``sha1``, ``n`` and the ``uuids`` sharing it (largest groups first)."""
    found = stats.dropna(subset=["sha1"]).groupby("sha1")["uuid"].agg(list)
    found = found[found.map(len) > 1]
    table = pd.DataFrame({"sha1": found.index, "n": found.map(len).values, "uuids": found.values})
    return table.sort_values("n", ascending=False, ignore_index=True)


def dominant_hue_name(r: float, g: float, b: float) -> str:
    """A coarse colour word for a mean RGB (for captions): grey-ish, or the hue family."""
    h, s, v = colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)
    if s < 0.15:
        return "white" if v > 0.8 else "black" if v < 0.2 else "grey"
    names = ["red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink"]
    edges = [0.04, 0.11, 0.19, 0.45, 0.55, 0.72, 0.83, 0.95]
    for edge, name in zip(edges, names):
        if h < edge:
            return name
    return "red"


def preprocessing_stages(data: bytes, size: int) -> list[tuple[str, Image.Image]]:
    """The steps from file bytes to the encoder's input, as (caption, image) pairs for a figure.

    The last stage is produced by ``embed.images.resize_shorter_crop``, the function the pipeline runs,
    so the figure shows exactly what the encoder sees (normalisation happens inside the ONNX graph).
    """
    raw = Image.open(io.BytesIO(data))
    raw.load()
    stages = [(f"file as stored {raw.width}x{raw.height}", to_rgb(raw.copy()))]
    upright = to_rgb(ImageOps.exif_transpose(raw))
    orientation = int(raw.getexif().get(EXIF_ORIENTATION, 1) or 1)
    stages.append((f"EXIF orientation {orientation} applied {upright.width}x{upright.height}", upright))
    scale = size / min(upright.size)
    resized = upright.resize((max(size, round(upright.width * scale)), max(size, round(upright.height * scale))),
                             Image.BICUBIC)
    stages.append((f"shorter side -> {size}: {resized.width}x{resized.height}", resized))
    encoder_input = Image.fromarray(resize_shorter_crop(upright, size))
    stages.append((f"centre crop = encoder input {size}x{size}", encoder_input))
    return stages


def with_exif_orientation(data: bytes, orientation: int = 6) -> bytes:
    """A copy of a JPEG as a phone would store it: pixels rotated, plus the EXIF tag that undoes it.

    Used to demonstrate (and test) that decoding restores the upright image.
    """
    image = to_rgb(Image.open(io.BytesIO(data)))
    # Orientation 6 means "rotate 90 degrees clockwise to display": store the pixels turned the other way.
    undo = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
    stored = image.transpose(undo[orientation])
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    out = io.BytesIO()
    stored.save(out, format="JPEG", quality=92, exif=exif.tobytes())
    return out.getvalue()


def read_image(sources: Iterable[str | Path] | str | Path, uuid: str) -> bytes:
    """The bytes of one image by uuid (for figures)."""
    return read_images(sources, [uuid])[uuid]


def read_images(sources: Iterable[str | Path] | str | Path, uuids: Iterable[str]) -> dict[str, bytes]:
    """Bytes of several images by uuid; uuids with no image are left out."""
    if isinstance(sources, (str, Path)):
        sources = [sources]
    refs, _ = select(list_images(sources), uuids)
    return {ref.uuid: ref.read() for ref in refs}


def thumbnails(
    sources: Iterable[str | Path] | str | Path, uuids: Iterable[str], size: int = 160
) -> dict[str, np.ndarray]:
    """Upright RGB thumbnails (longest side ``size``) by uuid, for example grids."""
    out = {}
    for uuid, data in read_images(sources, uuids).items():
        try:
            image = decode(data, draft_size=size)
        except ImageError:
            continue
        image.thumbnail((size, size), Image.BICUBIC)
        out[uuid] = np.asarray(image)
    return out
