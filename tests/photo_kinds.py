"""Photos made in the test, in every listed format and the kinds phones and cameras write (HEIC with an EXIF
rotation, AVIF, MPO, CMYK, 16-bit, alpha, a Display P3 profile). Shared by the format, service and page tests."""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image

# Each listed format as a test writes it: (Pillow format to save with, save options, lossless?)
WRITERS = {
    "JPEG": ("JPEG", {"quality": 95}, False),
    "MPO": ("MPO", {"quality": 95}, False),
    "PNG": ("PNG", {}, True),
    "WEBP": ("WEBP", {"lossless": True}, True),
    "GIF": ("GIF", {}, False),  # 256 colours: lossy for a photo
    "BMP": ("BMP", {}, True),
    "DIB": ("DIB", {}, True),
    "TIFF": ("TIFF", {"compression": "tiff_lzw"}, True),
    "HEIF": ("HEIF", {"quality": 90}, False),
    "AVIF": ("AVIF", {"quality": 90}, False),
}
ORIENTATION = 0x0112


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def photo_as(image: Image.Image, fmt: str) -> bytes:
    """``image`` saved as listed format ``fmt`` (an MPO holds it twice, as a camera's pair would)."""
    writer, options, _ = WRITERS[fmt]
    if writer == "MPO":
        options = {**options, "save_all": True, "append_images": [image]}
    return encode(image, writer, **options)


def rotated_as(upright: Image.Image, fmt: str) -> bytes:
    """``upright`` stored turned a quarter, with EXIF orientation 6 ("rotate 90 clockwise to show")."""
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    return encode(upright.transpose(Image.Transpose.ROTATE_90), fmt, exif=exif.tobytes(), quality=95)


def cmyk_jpeg(image: Image.Image) -> bytes:
    return encode(image.convert("CMYK"), "JPEG", quality=95)


def png16(image: Image.Image) -> bytes:
    return encode(Image.fromarray(np.asarray(image.convert("L"), np.uint16) * 257), "PNG")


def rgba_png(image: Image.Image) -> bytes:
    rgba = image.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(image.size))
    return encode(rgba, "PNG")


# --- a Display P3 ICC profile (v2 matrix/TRC), built here since no profile file may be shipped or fetched -
def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ " + bytes(4) + _s15(x) + _s15(y) + _s15(z)


def display_p3_profile() -> bytes:
    text = b"Display P3 (test)\0"
    describe = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(8 + 3 + 67)
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, int(2.2 * 256)) + bytes(2)
    tags = [(b"desc", describe), (b"wtpt", _xyz(0.9642, 1.0, 0.8249)), (b"rXYZ", _xyz(0.5151, 0.2412, -0.0011)),
            (b"gXYZ", _xyz(0.2920, 0.6922, 0.0419)), (b"bXYZ", _xyz(0.1571, 0.0666, 0.7841)),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    table, body, start = b"", b"", 128 + 4 + 12 * len(tags)
    for signature, data in tags:
        data += bytes(-len(data) % 4)
        table += signature + struct.pack(">II", start + len(body), len(data))
        body += data
    header = (struct.pack(">I", start + len(body)) + bytes(4) + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
              + bytes(12) + b"acsp" + bytes(28) + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + bytes(48))
    return header + struct.pack(">I", len(tags)) + table + body


def p3_photo(image: Image.Image, fmt: str = "PNG") -> bytes:
    """``image`` (sRGB) converted to Display P3 and saved with that profile, as a phone does."""
    from PIL import ImageCms

    profile = display_p3_profile()
    p3 = ImageCms.profileToProfile(image, ImageCms.createProfile("sRGB"), ImageCms.ImageCmsProfile(io.BytesIO(profile)))
    return encode(p3, fmt, icc_profile=profile)
