"""Issue 10, point 1: the decode budget follows cost (pixels after draft, bit depth, frames), not bytes.

Every attack file is made here, in memory; none is committed.
"""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from embed.images import CLI_LIMITS, DecodeLimits, ImageError, check_cost, inspect_cost, load_pixels

# Stricter than the CLI, like the service (service/settings.py defaults).
SERVICE_LIKE = DecodeLimits(max_pixels=24_000_000, max_bytes=192 * 2**20, max_frames=100)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def sixteen_bit_png(width: int, height: int) -> bytes:
    """A real 16-bit greyscale PNG of zeros, streamed through zlib row by row: tiny file, huge decode."""
    compressor, parts = zlib.compressobj(9), []
    row = b"\0" * (1 + 2 * width)  # filter byte + 2 bytes per pixel
    for _ in range(height):
        parts.append(compressor.compress(row))
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    idat = png_chunk(b"IDAT", b"".join(parts))
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + idat + png_chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def issue_png() -> bytes:
    data = sixteen_bit_png(8940, 8940)
    assert len(data) < 400_000  # ~150 KB: under every upload limit
    return data


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    """A real 108 MP JPEG (12000 x 9000), the size the issue saw refused."""
    return encode(Image.new("RGB", (12000, 9000), (150, 60, 40)), "JPEG", quality=40)


def test_small_16_bit_png_of_80_mp_is_refused_from_its_header(issue_png: bytes) -> None:
    started = time.process_time()
    with pytest.raises(ImageError, match="decompression bomb") as caught:
        load_pixels(issue_png, 260, SERVICE_LIKE)
    assert caught.value.code == "decompression_bomb"
    assert time.process_time() - started < 0.5  # refused before decoding (decoding takes seconds)
    cost = inspect_cost(issue_png, 260)
    assert cost.pixels == 8940 * 8940 and cost.bytes > 8 * cost.pixels  # bit depth counts
    check_cost(cost, CLI_LIMITS)  # the command line may decode it: within its (larger) budget


def test_real_108_mp_jpeg_is_accepted_through_draft(big_jpeg: bytes) -> None:
    cost = inspect_cost(big_jpeg, 260)
    assert cost.pixels <= 12000 * 9000 / 64  # decoded at 1/8 scale
    check_cost(cost, SERVICE_LIKE)
    assert load_pixels(big_jpeg, 260, SERVICE_LIKE).shape == (260, 260, 3)


def test_without_draft_the_same_jpeg_is_over_the_service_budget(big_jpeg: bytes) -> None:
    with pytest.raises(ImageError, match="decompression bomb"):
        check_cost(inspect_cost(big_jpeg, None), SERVICE_LIKE)


def patch_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    """Rewrite the size in a JPEG's SOF marker (baseline or progressive), leaving the rest alone."""
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = data.find(marker)
        if at >= 0:
            return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]
    raise AssertionError("no SOF marker")


def test_progressive_jpeg_memory_follows_its_full_size(picture) -> None:
    # Progressive JPEGs keep every coefficient of the full image whatever the draft scale.
    base = encode(picture(0, size=(64, 48)), "JPEG", progressive=True)
    huge = patch_jpeg_size(base, 20000, 15000)
    baseline = patch_jpeg_size(encode(picture(0, size=(64, 48)), "JPEG"), 20000, 15000)
    assert inspect_cost(huge, 260).bytes > inspect_cost(baseline, 260).bytes + 20000 * 15000
    with pytest.raises(ImageError, match="decompression bomb"):
        load_pixels(huge, 260, SERVICE_LIKE)


def huge_header(fmt: str) -> bytes:
    """A small file of another format whose header declares a huge image."""
    if fmt == "PNG-RGBA":
        ihdr = struct.pack(">IIBBBBB", 6000, 6000, 8, 6, 0, 0, 0)  # 36 MP RGBA: 20 bytes a pixel to convert
        return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) \
            + png_chunk(b"IEND", b"")
    if fmt == "GIF":
        data = bytearray(encode(Image.new("P", (8, 8)), "GIF"))
        data[6:10] = struct.pack("<HH", 30000, 30000)  # logical screen
        image_descriptor = data.index(b"\x2c")
        data[image_descriptor + 5 : image_descriptor + 9] = struct.pack("<HH", 30000, 30000)
        return bytes(data)
    if fmt == "BMP":
        data = bytearray(encode(Image.new("RGB", (8, 8)), "BMP"))
        data[18:26] = struct.pack("<ii", 30000, 30000)
        return bytes(data)
    if fmt == "TIFF":
        return _tiff_declaring(40000, 40000)
    raise AssertionError(fmt)


def _tiff_declaring(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("L", (8, 8)), "TIFF"))
    image = Image.open(io.BytesIO(bytes(data)))
    del image
    # Little-endian TIFF: walk the first IFD and rewrite ImageWidth (256) and ImageLength (257).
    offset = struct.unpack("<I", data[4:8])[0]
    count = struct.unpack("<H", data[offset : offset + 2])[0]
    for i in range(count):
        entry = offset + 2 + 12 * i
        tag, kind = struct.unpack("<HH", data[entry : entry + 4])
        if tag in (256, 257):
            value = width if tag == 256 else height
            data[entry + 2 : entry + 4] = struct.pack("<H", 4)  # LONG
            data[entry + 8 : entry + 12] = struct.pack("<I", value)
    return bytes(data)


@pytest.mark.parametrize("fmt", ["PNG-RGBA", "GIF", "BMP", "TIFF"])
def test_other_formats_declaring_huge_images_are_refused(fmt: str) -> None:
    started = time.process_time()
    with pytest.raises(ImageError) as caught:
        load_pixels(huge_header(fmt), 260, SERVICE_LIKE)
    assert caught.value.code == "decompression_bomb", caught.value
    assert time.process_time() - started < 0.5


def test_animated_png_with_too_many_frames_is_refused() -> None:
    frames = [Image.new("RGB", (4, 4), (i, 0, 0)) for i in range(120)]
    data = encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    assert inspect_cost(data).frames == 120
    with pytest.raises(ImageError, match="too many frames"):
        load_pixels(data, 32, SERVICE_LIKE)
    assert load_pixels(data, 32).shape == (32, 32, 3)  # the command line allows more frames (only the first is used)


@pytest.mark.parametrize("fmt", ["TGA", "PCX", "ICO", "PPM"])
def test_formats_that_are_no_photo_are_refused(picture, fmt: str) -> None:
    with pytest.raises(ImageError) as caught:
        load_pixels(encode(picture(0, size=(32, 32)), fmt), 32)
    assert caught.value.code == "not_a_photo_format"
    assert str(caught.value) == f"not a photo format ({fmt})"


def test_mpo_like_jpeg_still_decodes(picture) -> None:
    # Phones write MPO (multi-picture JPEG); Pillow reads it through the JPEG plugin, with draft.
    frames = [picture(0, size=(640, 480)), picture(1, size=(640, 480))]
    data = encode(frames[0], "MPO", save_all=True, append_images=frames[1:])
    assert inspect_cost(data, 64).pixels < 640 * 480
    assert load_pixels(data, 64, SERVICE_LIKE).shape == (64, 64, 3)


# --- property: any bytes -> a usable image or ImageError, within the memory budget ------------------------

PROPERTY_LIMITS = DecodeLimits(max_pixels=4_000_000, max_bytes=48 * 2**20, max_frames=20)
SLACK_BYTES = 24 * 2**20  # interpreter and allocator noise on top of the decode itself


def _seeds() -> list[bytes]:
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8))
    grey16 = Image.fromarray(np.random.default_rng(1).integers(0, 65535, (16, 16)).astype(np.uint16))
    return [
        encode(rgb, "JPEG"), encode(rgb, "JPEG", progressive=True), encode(rgb, "PNG"),
        encode(rgb.convert("RGBA"), "PNG"), encode(grey16, "PNG"), encode(rgb.convert("P"), "GIF"),
        encode(rgb, "BMP"), encode(rgb, "TIFF"), encode(rgb, "WEBP"), encode(rgb.convert("CMYK"), "TIFF"),
    ]


SEEDS = _seeds()


@st.composite
def hostile_bytes(draw) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=2048))
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(data) - 1))
        if draw(st.booleans()):  # header fields (sizes, depths, counts) live near the start
            position %= min(len(data), 256)
        if draw(st.booleans()):  # a big 16- or 32-bit word, as a forged width, height or count would be
            word = draw(st.sampled_from([b"\xff\xff", b"\x7f\xff", b"\x00\x00\x7f\xff", b"\xff\x7f\x00\x00"]))
            data[position : position + len(word)] = word
        else:
            data[position] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


class PeakMemory:
    """Peak memory of a call: the kernel's high-water mark (VmHWM, reset per call) where it can be reset,
    else tracemalloc (numpy and Python allocations only)."""

    def __init__(self):
        self.kernel = self._can_reset()

    @staticmethod
    def _can_reset() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    @staticmethod
    def _status(key: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
        raise KeyError(key)

    def measure(self, call) -> int:
        if self.kernel:
            Path("/proc/self/clear_refs").write_text("5")
            before = self._status("VmRSS:")
            call()
            return self._status("VmHWM:") - before
        tracemalloc.start()
        try:
            call()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()


PEAK = PeakMemory()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(data=hostile_bytes())
def test_loader_on_random_and_mutated_bytes(data: bytes) -> None:
    outcome = {}

    def call() -> None:
        try:
            outcome["pixels"] = load_pixels(data, 32, PROPERTY_LIMITS)
        except ImageError as error:  # the only exception allowed
            outcome["error"] = error

    peak = PEAK.measure(call)
    assert peak <= PROPERTY_LIMITS.max_bytes + SLACK_BYTES, f"{peak / 2**20:.0f} MB for {len(data)} bytes"
    if "pixels" in outcome:
        assert outcome["pixels"].shape == (32, 32, 3) and outcome["pixels"].dtype == np.uint8
    else:
        assert outcome["error"].code in ImageError.CODES


def _image_of_mode(mode: str, side: int) -> Image.Image:
    rng = np.random.default_rng(3)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65535, (side, side)).astype(np.uint16))
    if mode == "P":
        return Image.fromarray(rng.integers(0, 255, (side, side), dtype=np.uint8)).convert("P")
    return Image.fromarray(rng.integers(0, 255, (side, side, 4), dtype=np.uint8), "RGBA").convert(mode)


@pytest.mark.parametrize(("mode", "fmt"), [("RGB", "PNG"), ("RGBA", "PNG"), ("L", "PNG"), ("I;16", "PNG"),
                                           ("P", "PNG"), ("LA", "PNG"), ("CMYK", "TIFF"), ("RGBA", "WEBP"),
                                           ("RGB", "GIF"), ("RGB", "BMP")])
def test_estimated_decode_memory_bounds_the_real_peak(mode: str, fmt: str) -> None:
    # The budget is only as good as the estimate: decode real images and compare the measured peak.
    side = 1200
    data = encode(_image_of_mode(mode, side), fmt, **({"transparency": 3} if mode == "P" else {}))
    estimate = inspect_cost(data, 260).bytes
    peak = PEAK.measure(lambda: load_pixels(data, 260))
    assert peak <= estimate + 2 * 2**20, f"{mode} {fmt}: {peak / side**2:.1f} B/px measured, {estimate / side**2:.1f}"
