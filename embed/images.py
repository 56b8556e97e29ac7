"""Decode and preprocess one image: bytes in, a uint8 HxWx3 array of the encoder's input size out.

Normalisation (mean/std) happens inside the ONNX graph, so this step stays cheap and exact in uint8.
Anything that cannot become a sane RGB image raises ImageError with a reason a person can read.
"""

from __future__ import annotations

import functools
import io
import warnings
from struct import error as struct_error
from dataclasses import dataclass

import numpy as np
import pillow_heif
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from embed.chatter import collecting

pillow_heif.register_heif_opener()  # HEIC/HEIF, the iPhone's default; Pillow reads AVIF itself (>= 11.2)
Image.init()  # registers every plugin, so that FORMATS below can name WEBP and TIFF

# THE list of photo formats: what a seller's phone or camera writes. embed, classify predict --images, the
# service and the page's file input (``accept_attribute``) all read it. Each entry: Pillow's format name ->
# (MIME types, file suffixes). Pillow opens many more (PSD, EPS, ICNS, FITS, TGA...); each is more parser to
# attack and none is a photo, so they are named "not a photo format (NAME)" and never decoded.
PHOTO_FORMATS = {
    "JPEG": (("image/jpeg",), (".jpg", ".jpeg", ".jpe", ".jfif")),
    "MPO": (("image/mpo",), (".mpo",)),  # the multi-picture JPEG of many cameras (3D, depth)
    "PNG": (("image/png",), (".png",)),
    "WEBP": (("image/webp",), (".webp",)),
    "GIF": (("image/gif",), (".gif",)),
    "BMP": (("image/bmp",), (".bmp",)),
    "DIB": ((), (".dib",)),
    "TIFF": (("image/tiff",), (".tif", ".tiff")),
    "HEIF": (("image/heic", "image/heif", "image/heic-sequence", "image/heif-sequence"), (".heic", ".heif", ".hif")),
    "AVIF": (("image/avif",), (".avif",)),
}
FORMATS = tuple(f for f in PHOTO_FORMATS if f in Image.OPEN)
OTHER_FORMATS = tuple(f for f in Image.ID if f not in FORMATS)
PHOTO_SUFFIXES = frozenset(suffix for _, suffixes in PHOTO_FORMATS.values() for suffix in suffixes)
DRAFT_FORMATS = ("JPEG", "MPO")  # decoded at 1/2, 1/4 or 1/8 scale straight from the DCT when asked
SNIFF_BYTES = 16  # what Pillow's plugins look at to recognise a format (Image.open reads as much)
SNIFF_ORDER = (*FORMATS, *OTHER_FORMATS)  # photos first: the usual file is answered by the first few checks


def accept_attribute() -> str:
    """The page's ``<input type=file accept=...>``: every MIME type and suffix of PHOTO_FORMATS (suffixes too,
    since a browser may not know a HEIC's MIME type)."""
    kinds = [kind for types in PHOTO_FORMATS.values() for part in types for kind in part]
    return ",".join(dict.fromkeys(kinds))


def sniff(prefix: bytes) -> str | None:
    """The format the first bytes of a file announce (Pillow's plugins' own checks, nothing parsed), or None.
    A photo format when it is in FORMATS; formats Pillow recognises only by parsing (TGA...) give None."""
    for name in SNIFF_ORDER:
        accept = Image.OPEN[name][1]
        if accept is not None and accept(prefix[:SNIFF_BYTES]):
            return name
    return None


def identify(data: bytes) -> str | None:
    """The format of bytes that did not open as a photo: a photo format when their first bytes announce one
    (a broken photo), else what the other formats' header parsers recognise (header only, never a pixel),
    else None."""
    name = sniff(data)
    if name in FORMATS:
        return name
    try:
        with collecting():
            return Image.open(io.BytesIO(data), formats=OTHER_FORMATS).format
    except Exception:  # noqa: BLE001 - anything a header parser raises means "not this format"
        return name


MB = 2**20


@dataclass(frozen=True)
class DecodeLimits:
    """What one image may cost to decode, judged from its header before any pixel is decoded.

    ``max_pixels`` counts the pixels actually decoded (a JPEG after draft reduction), so a 200 MP phone photo
    that decodes at 1/8 scale passes while a small PNG declaring 80 MP of 16-bit zeros does not.
    ``max_bytes`` bounds the memory of decoding plus conversion to RGB (see ``decode_cost``).
    """

    max_pixels: int = 100_000_000
    max_bytes: int = 1536 * MB
    max_frames: int = 1000


# The command line decodes one image per reader thread; the service has stricter limits (service/settings.py).
CLI_LIMITS = DecodeLimits()
# Peak bytes per decoded pixel: Pillow's raster (RGB is stored in 4 bytes) plus the copies that to_rgb and
# exif_transpose make for that mode (measured with tracemalloc/VmHWM on 16-bit, palette and alpha images).
PEAK_BYTES_PER_PIXEL = {"1": 6, "L": 6, "RGB": 9, "YCbCr": 9, "CMYK": 9, "I;16": 12, "I;16L": 12, "I;16B": 12,
                        "I;16N": 12, "I": 16, "F": 16}
DEFAULT_PEAK_BYTES = 20  # palette and alpha modes: an RGBA copy, a white background and the alpha mask
# libwebp, libheif and libavif decode into buffers of their own (YUV planes, then RGB) before Pillow copies them
DECODER_BYTES_PER_PIXEL = {"WEBP": 8, "HEIF": 8, "AVIF": 8}
HEADER_FRAMES = ("PNG", "WEBP", "HEIF", "AVIF")  # formats whose header says how many frames they hold
# A progressive JPEG keeps every DCT coefficient of the full-size image (2 bytes each, ~1.5 per pixel at
# 4:2:0, up to 3 at 4:4:4) whatever the draft scale: its memory follows the full size.
PROGRESSIVE_BYTES_PER_PIXEL = 6
DECLARED_SIZE = "vinted_tagger_declared_size"  # key in image.info: the size before draft reduction
# Pillow's own bomb check counts the pixels before draft reduction, so DecodeLimits does the real check; this
# only stops absurd headers (Pillow refuses at twice this) before anything else looks at them.
Image.MAX_IMAGE_PIXELS = 1_000_000_000
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)  # DecodeLimits decides, not this


class ImageError(ValueError):
    """An input that is not a usable image; the message says why, ``code`` says which kind (for programs)."""

    # not_a_photo_format and not_an_image are "ignored" (not photos), the other codes "failed" (bad photos)
    CODES = ("empty_file", "decompression_bomb", "not_a_photo_format", "not_an_image", "corrupt_image")
    IGNORED = ("not_a_photo_format", "not_an_image")

    def __init__(self, message: str, code: str = "corrupt_image"):
        super().__init__(message)
        self.code = code


# The first words of the reasons of IGNORED codes: a reason that crossed a process boundary (a Ray worker's)
# is a string, and embed.summary sorts it by these.
IGNORED_REASONS = ("not a photo format (", "not an image (")


@dataclass(frozen=True)
class DecodeCost:
    """What decoding an image will take, read from its header: pixels decoded, peak bytes, frames."""

    width: int
    height: int
    pixels: int  # after draft reduction
    bytes: int
    frames: int
    declared_pixels: int = 0  # before draft reduction: a JPEG still entropy-decodes all of them

    @property
    def work(self) -> int:
        """One number for "how heavy": peak bytes, or declared pixels when those are more (big drafted JPEGs)."""
        return max(self.bytes, self.declared_pixels)


def open_image(data: bytes, draft_size: int | None = None) -> Image.Image:
    """Bytes -> a PIL image whose header is read (and JPEG draft scale set), no pixel decoded yet."""
    if not data:
        raise ImageError("empty file", "empty_file")
    with _image_errors(), collecting():
        try:
            image = Image.open(io.BytesIO(data), formats=FORMATS)
        except UnidentifiedImageError:
            raise not_a_photo(data) from None
        image.info[DECLARED_SIZE] = image.size  # draft() below replaces image.size with the reduced one
        if draft_size and image.format in DRAFT_FORMATS:
            image.draft("RGB", (draft_size, draft_size))  # sets image.size to the scale that will be decoded
        return image


def not_a_photo(data: bytes) -> ImageError:
    """The error for bytes no photo format recognises, naming the format they are when Pillow knows it."""
    name = identify(data)
    if name in FORMATS:  # it starts like a photo, but its header does not parse: a broken photo
        return ImageError(f"corrupt or truncated image: {name} header cannot be read")
    if name is None:
        return ImageError("not an image (unrecognised format)", "not_an_image")
    return ImageError(f"not a photo format ({name})", "not_a_photo_format")


def decode_cost(image: Image.Image) -> DecodeCost:
    """The cost of decoding ``image`` (opened by open_image), from the header alone."""
    full_width, full_height = image.info.get(DECLARED_SIZE, image.size)
    pixels = image.width * image.height
    per_pixel = PEAK_BYTES_PER_PIXEL.get(image.mode, DEFAULT_PEAK_BYTES) + DECODER_BYTES_PER_PIXEL.get(image.format, 0)
    memory = pixels * per_pixel
    if image.format in DRAFT_FORMATS and image.info.get("progressive"):
        memory += full_width * full_height * PROGRESSIVE_BYTES_PER_PIXEL
    # Only formats that declare their frame count in the header: counting GIF frames would parse them all.
    frames = int(getattr(image, "n_frames", 1)) if image.format in HEADER_FRAMES else 1
    return DecodeCost(image.width, image.height, pixels, memory, frames, full_width * full_height)


def check_cost(cost: DecodeCost, limits: DecodeLimits) -> None:
    """Refuse (ImageError "decompression_bomb") an image that would cost more than ``limits``."""
    size = f"{cost.width}x{cost.height}"
    if cost.pixels > limits.max_pixels:
        problem = f"image too large: {size} pixels to decode > {limits.max_pixels:,}"
    elif cost.bytes > limits.max_bytes:
        problem = f"image too costly to decode: {size} needs ~{cost.bytes / MB:,.0f} MB > {limits.max_bytes / MB:,.0f}"
    elif cost.frames > limits.max_frames:
        problem = f"too many frames: {cost.frames} > {limits.max_frames}"
    else:
        return
    raise ImageError(f"decompression bomb: {problem}", "decompression_bomb")


def inspect_cost(data: bytes, draft_size: int | None = None) -> DecodeCost:
    """Header only: the cost of decoding ``data``; raises ImageError when the header is unusable."""
    return decode_cost(open_image(data, draft_size))


class _image_errors:
    """Pillow's many exception types -> ImageError with a reason a person can read."""

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if error is None or isinstance(error, ImageError):
            return False
        if isinstance(error, Image.DecompressionBombError):
            raise ImageError(f"decompression bomb: {error}", "decompression_bomb") from None
        if isinstance(error, UnidentifiedImageError):
            raise ImageError("not an image (unrecognised format)", "not_an_image") from None
        if isinstance(error, MemoryError):
            raise ImageError("image too large to decode (out of memory)", "decompression_bomb") from None
        if isinstance(error, (OSError, SyntaxError, ValueError, EOFError, TypeError, IndexError, KeyError,
                              struct_error, ZeroDivisionError, OverflowError)):
            raise ImageError(f"corrupt or truncated image: {error}") from None
        return False


def decode(data: bytes, draft_size: int | None = None, limits: DecodeLimits = CLI_LIMITS) -> Image.Image:
    """Bytes -> RGB PIL image with EXIF orientation applied; refused before decoding when over ``limits``.
    Warnings the decoder raises become part of the reason when it fails (see embed/chatter.py)."""
    with collecting() as said:
        try:
            return _decode(data, draft_size, limits)
        except ImageError as error:
            if said:
                error.args = (f"{error}; decoder said: {'; '.join(dict.fromkeys(said))}",)
                said.clear()
            raise


def _decode(data: bytes, draft_size: int | None, limits: DecodeLimits) -> Image.Image:
    image = open_image(data, draft_size)
    check_cost(decode_cost(image), limits)
    with _image_errors():
        image.load()
    try:
        ImageOps.exif_transpose(image, in_place=True)  # in place: no copy for the usual, unrotated photo
    except Exception as error:  # Pillow rewrites the EXIF block here and can choke on malformed tags
        raise ImageError(f"corrupt EXIF metadata: {error}") from None
    profile = rgb_profile(image)
    with _image_errors():
        rgb = to_rgb(image)
    if profile:
        rgb.info[ICC_PROFILE] = profile
    return rgb


def to_rgb(image: Image.Image) -> Image.Image:
    """Any mode (CMYK, palette, 16-bit, alpha, greyscale) -> 8-bit RGB; transparency over white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits instead of letting Pillow clip at 255.
        array = np.asarray(image, dtype=np.float32)  # float32, scaled in place: 4 bytes a pixel, not 16
        array *= 255.0 / max(float(array.max()), 1.0)
        return Image.fromarray(array.astype(np.uint8)).convert("RGB")
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


def load_pixels(data: bytes, size: int, limits: DecodeLimits = CLI_LIMITS, decoder: str | None = None) -> np.ndarray:
    """Bytes -> encoder input (uint8 size x size x 3) in sRGB; ``decoder`` as in ``DECODERS`` (None: the
    default)."""
    image = decode_turbo(data, size, limits) if (decoder or default_decoder()) == "simplejpeg" else None
    image = image or decode(data, draft_size=size, limits=limits)
    return to_srgb(resize_shorter_crop(image, size), image.info.get(ICC_PROFILE))


# --- colour profiles -----------------------------------------------------------------------------------
# Phones tag their photos with a wide-gamut profile (Display P3); the encoder was trained on sRGB. The
# conversion runs on the resized crop (size x size pixels), not on the full photo: a profile maps each
# pixel alone, so the order barely changes the result and the cost stays that of a thumbnail.
ICC_PROFILE = "icc_profile"
SRGB = ImageCms.createProfile("sRGB")


def rgb_profile(image: Image.Image) -> bytes | None:
    """The image's embedded ICC profile when it describes RGB (CMYK and grey profiles are not applied)."""
    profile = image.info.get(ICC_PROFILE)
    if not profile or len(profile) < 20 or profile[16:20] != b"RGB ":
        return None
    return profile


def to_srgb(pixels: np.ndarray, profile: bytes | None) -> np.ndarray:
    """uint8 HxWx3 pixels in ``profile``'s colours -> sRGB (unchanged without a profile or with a bad one)."""
    if not profile:
        return pixels
    transform = _transform_to_srgb(profile)
    if transform is None:
        return pixels
    image = Image.fromarray(pixels)
    ImageCms.applyTransform(image, transform, inPlace=True)
    return np.asarray(image, dtype=np.uint8)


@functools.lru_cache(maxsize=32)
def _transform_to_srgb(profile: bytes) -> ImageCms.ImageCmsTransform | None:
    """One transform per distinct profile (a phone writes the same few bytes into every photo)."""
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        return ImageCms.buildTransform(source, SRGB, "RGB", "RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):  # a broken profile: keep the pixels as they are
        return None


# --- decoder choice ------------------------------------------------------------------------------------
# "pillow" (default): Pillow's ``decode`` (draft mode, budget, EXIF) for every image. "simplejpeg":
# libjpeg-turbo with DCT scaling for plain upright JPEGs, everything else through ``decode``; same pixels to
# within rounding, but not faster on the stand-in once its header checks are paid (bench/embed_bench.py,
# `decoders`). Resizing is Pillow's bicubic for both.
DECODERS = ("simplejpeg", "pillow")
try:
    import simplejpeg
except ImportError:  # the [fast] extra is not installed: Pillow decodes everything
    simplejpeg = None


def default_decoder() -> str:
    return "pillow"


def check_decoder(name: str | None) -> str:
    name = name or default_decoder()
    if name not in DECODERS:
        raise ValueError(f"unknown decoder {name!r}; valid: {', '.join(DECODERS)}")
    if name == "simplejpeg" and simplejpeg is None:
        raise ValueError("decoder simplejpeg is not installed: pip install 'vinted-tagger[fast]'")
    return name


def decode_turbo(data: bytes, size: int, limits: DecodeLimits = CLI_LIMITS) -> Image.Image | None:
    """A plain, upright JPEG within ``limits`` decoded by libjpeg-turbo at the smallest scale >= ``size``;
    None for anything else (other formats, EXIF rotation, CMYK, over budget, any error), which ``decode``
    then handles with its checks and messages."""
    if simplejpeg is None or data[:3] != b"\xff\xd8\xff":
        return None
    try:
        header = open_image(data, size)  # the header only, at the draft scale libjpeg-turbo will use too
        if (header.format != "JPEG" or header.mode != "RGB" or header.getexif().get(0x0112, 1) != 1
                or rgb_profile(header)):
            return None  # EXIF rotation, CMYK, greyscale, a colour profile: Pillow's path converts them
        check_cost(decode_cost(header), limits)
        array = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=size, min_width=size)
    except Exception:  # noqa: BLE001 - whatever fails here, Pillow's path reports it properly
        return None
    return Image.fromarray(array)
