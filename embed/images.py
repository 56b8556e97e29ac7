"""Decode and preprocess one image: bytes in, a uint8 HxWx3 array of the encoder's input size out.

Normalisation (mean/std) happens inside the ONNX graph, so this step stays cheap and exact in uint8.
Anything that cannot become a sane RGB image raises ImageError with a reason a person can read.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Largest image we agree to decode. Phone photos are ~12-50 MP; anything bigger is a decompression bomb.
MAX_PIXELS = 80_000_000
# Pillow refuses (DecompressionBombError) at 2x its own limit and warns at 1x; ours is enforced explicitly.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class ImageError(ValueError):
    """An input that is not a usable image; the message says why, ``code`` says which kind (for programs)."""

    CODES = ("empty_file", "decompression_bomb", "not_an_image", "corrupt_image")

    def __init__(self, message: str, code: str = "corrupt_image"):
        super().__init__(message)
        self.code = code


def decode(data: bytes, draft_size: int | None = None) -> Image.Image:
    """Bytes -> RGB PIL image with EXIF orientation applied."""
    if not data:
        raise ImageError("empty file", "empty_file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            pixels = image.width * image.height
            if pixels > MAX_PIXELS:
                raise ImageError(
                    f"image too large: {image.width}x{image.height} pixels > {MAX_PIXELS:,}", "decompression_bomb"
                )
            if draft_size and image.format == "JPEG":
                # JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale straight from the DCT: big photos get cheap.
                image.draft("RGB", (draft_size, draft_size))
            image.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"decompression bomb: {error}", "decompression_bomb") from None
    except UnidentifiedImageError:
        raise ImageError("not an image (unrecognised format)", "not_an_image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageError(f"corrupt or truncated image: {error}") from None
    try:
        ImageOps.exif_transpose(image, in_place=True)  # in place: no copy for the usual, unrotated photo
    except Exception as error:  # Pillow rewrites the EXIF block here and can choke on malformed tags
        raise ImageError(f"corrupt EXIF metadata: {error}") from None
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any mode (CMYK, palette, 16-bit, alpha, greyscale) -> 8-bit RGB; transparency over white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits instead of letting Pillow clip at 255.
        array = np.asarray(image, dtype=np.float64)
        peak = max(float(array.max()), 1.0)
        return Image.fromarray((array * (255.0 / peak)).astype(np.uint8)).convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")


def resize_shorter_crop(image: Image.Image, size: int) -> np.ndarray:
    """Shorter side to ``size`` (bicubic), centre crop to size x size; returns uint8 HxWx3."""
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    left, top = (new_w - size) // 2, (new_h - size) // 2
    # resize with box= crops and resizes in one pass, skipping the pixels that would be cut off.
    box = (left / scale, top / scale, (left + size) / scale, (top + size) / scale)
    out = image.resize((size, size), Image.BICUBIC, box=box, reducing_gap=3.0)
    return np.asarray(out, dtype=np.uint8)


def load_pixels(data: bytes, size: int, decoder: str | None = None) -> np.ndarray:
    """Bytes -> encoder input (uint8 size x size x 3); ``decoder`` as in ``DECODERS`` (None: the default)."""
    image = decode_turbo(data, size) if (decoder or default_decoder()) == "simplejpeg" else None
    return resize_shorter_crop(image or decode(data, draft_size=size), size)


# --- decoder choice ------------------------------------------------------------------------------------
# "simplejpeg": libjpeg-turbo with DCT scaling for plain upright JPEGs (faster than Pillow's decode, same
# pixels to within rounding; bench/embed_bench.py); everything else goes through Pillow's ``decode``.
# "pillow": Pillow's draft mode for every image. Resizing is Pillow's bicubic for both.
DECODERS = ("simplejpeg", "pillow")
try:
    import simplejpeg
except ImportError:  # the [fast] extra is not installed: Pillow decodes everything
    simplejpeg = None


def default_decoder() -> str:
    return "simplejpeg" if simplejpeg is not None else "pillow"


def check_decoder(name: str | None) -> str:
    name = name or default_decoder()
    if name not in DECODERS:
        raise ValueError(f"unknown decoder {name!r}; valid: {', '.join(DECODERS)}")
    if name == "simplejpeg" and simplejpeg is None:
        raise ValueError("decoder simplejpeg is not installed: pip install 'vinted-tagger[fast]'")
    return name


def decode_turbo(data: bytes, size: int) -> Image.Image | None:
    """A plain, upright, sane-sized JPEG decoded by libjpeg-turbo at the smallest scale >= ``size``; None for
    anything else (other formats, EXIF rotation, CMYK, any error), which ``decode`` then handles with its
    checks and messages."""
    if simplejpeg is None or data[:3] != b"\xff\xd8\xff":
        return None
    try:
        header = Image.open(io.BytesIO(data))  # reads the header only
        if header.format != "JPEG" or header.mode != "RGB" or header.width * header.height > MAX_PIXELS:
            return None
        if header.getexif().get(0x0112, 1) != 1:  # EXIF orientation: Pillow's path rotates it
            return None
        array = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=size, min_width=size)
    except Exception:  # noqa: BLE001 - whatever fails here, Pillow's path reports it properly
        return None
    return Image.fromarray(array)
