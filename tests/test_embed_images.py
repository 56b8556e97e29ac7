"""Decoding and preprocessing (embed/images.py): odd-but-valid images convert, broken ones fail with a reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from embed import images
from embed.images import ImageError, decode, load_pixels, resize_shorter_crop

ORIENTATION = 0x0112


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return exif.tobytes()


# --- valid images in awkward formats --------------------------------------------------------------------


def test_exif_orientation_is_applied(picture, image_bytes) -> None:
    image = picture(3, size=(90, 60))  # landscape, not symmetric
    plain = decode(image_bytes(image, "JPEG", quality=95))
    rotated = decode(image_bytes(image, "JPEG", quality=95, exif=exif_bytes(6)))
    assert plain.size == (90, 60)
    assert rotated.size == (60, 90)  # orientation 6: the camera was turned 90 degrees clockwise
    # Same compressed pixels, only the EXIF tag differs: the result is exactly the plain image turned.
    np.testing.assert_array_equal(np.asarray(rotated), np.asarray(plain.transpose(Image.Transpose.ROTATE_270)))
    assert not np.array_equal(np.asarray(rotated), np.asarray(plain.transpose(Image.Transpose.ROTATE_90)))


def test_exif_orientation_reaches_encoder_input(picture, image_bytes) -> None:
    image = picture(3, size=(90, 60))
    pixels = load_pixels(image_bytes(image, "PNG", exif=exif_bytes(8)), 48)
    expected = resize_shorter_crop(image.transpose(Image.Transpose.ROTATE_90), 48)
    np.testing.assert_array_equal(pixels, expected)


def test_cmyk_jpeg(image_bytes) -> None:
    colour = (200, 40, 90)
    data = image_bytes(Image.new("RGB", (48, 32), colour).convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = np.asarray(decode(data))
    assert out.shape == (32, 48, 3)
    assert np.abs(out.reshape(-1, 3).mean(0) - colour).max() < 6  # colours survive, not inverted


def test_palette_png_with_transparency(image_bytes) -> None:
    image = Image.new("P", (4, 2))
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30])
    image.putdata([0, 1, 2, 3, 0, 1, 2, 3])
    data = image_bytes(image, "PNG", transparency=3)  # palette index 3 is fully transparent
    out = np.asarray(decode(data))
    expected = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]] * 2, np.uint8)
    np.testing.assert_array_equal(out, expected)  # transparent -> white, not the hidden palette colour


def test_16_bit_greyscale_png_is_scaled_not_clipped(image_bytes) -> None:
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (8, 1))
    image = Image.fromarray(ramp)
    assert image.mode.startswith("I;16")
    out = np.asarray(decode(image_bytes(image, "PNG")))
    assert out.shape == (8, 64, 3)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    row = out[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and (np.diff(row) >= 0).all()
    assert 120 <= row[32] <= 135  # mid-grey stays mid-grey (clipping would make it 255)


def test_rgba_png_composited_over_white(image_bytes) -> None:
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[:, :3] = (0, 0, 255, 255)  # opaque blue
    rgba[:, 3:] = (0, 0, 0, 0)  # transparent (black underneath)
    out = np.asarray(decode(image_bytes(Image.fromarray(rgba, "RGBA"), "PNG")))
    assert (out[:, :3] == (0, 0, 255)).all()
    assert (out[:, 3:] == 255).all()


@pytest.mark.parametrize("mode", ["L", "LA", "1", "I"])
def test_other_modes_become_rgb(picture, image_bytes, mode: str) -> None:
    image = picture(1, size=(40, 30)).convert("L")
    image = image.point(lambda v: 255 if v > 128 else 0).convert("1") if mode == "1" else image.convert(mode)
    out = decode(image_bytes(image, "PNG" if mode != "I" else "TIFF"))
    assert out.mode == "RGB" and out.size == (40, 30)
    assert np.asarray(out).std() > 10  # content survived


def test_resize_shorter_side_then_centre_crop() -> None:
    # Portrait 100 x 200: red bands top and bottom, green middle; the centre square is the green part.
    array = np.zeros((200, 100, 3), np.uint8)
    array[:50] = array[150:] = (255, 0, 0)
    array[50:150] = (0, 255, 0)
    out = resize_shorter_crop(Image.fromarray(array), 50)
    assert out.shape == (50, 50, 3) and out.dtype == np.uint8
    assert (out[2:-2, :, 1] > 240).all() and (out[2:-2, :, 0] < 15).all()


def test_jpeg_draft_keeps_enough_resolution(picture, image_bytes) -> None:
    data = image_bytes(picture(2, size=(600, 400)), "JPEG")
    image = decode(data, draft_size=64)
    assert min(image.size) >= 64  # draft decodes at a reduced scale, but never below the target
    assert load_pixels(data, 64).shape == (64, 64, 3)


# --- broken inputs: ImageError with a readable reason ---------------------------------------------------


@pytest.mark.parametrize(
    "kind", ["zero-bytes", "text", "truncated-jpeg", "garbled-jpeg-header", "corrupt-png-data", "bomb", "bad-exif"]
)
def test_broken_images_raise_image_error(broken_image, kind: str) -> None:
    data, reason = broken_image(kind)
    with pytest.raises(ImageError, match=reason):
        load_pixels(data, 64)


@pytest.mark.parametrize(
    ("kind", "code"),
    [("zero-bytes", "empty_file"), ("text", "not_an_image"), ("truncated-jpeg", "corrupt_image"),
     ("bomb", "decompression_bomb"), ("bad-exif", "corrupt_image")],
)
def test_broken_images_carry_a_code(broken_image, kind: str, code: str) -> None:
    # Programs (the REST service) map the code to an HTTP status; messages may be reworded freely.
    with pytest.raises(ImageError) as caught:
        load_pixels(broken_image(kind)[0], 64)
    assert caught.value.code == code and code in ImageError.CODES


def test_pixel_limit_is_enforced(picture, image_bytes) -> None:
    data = image_bytes(picture(0, size=(50, 40)), "PNG")
    assert load_pixels(data, 32).shape == (32, 32, 3)
    with pytest.raises(ImageError, match="too large: 50x40"):
        load_pixels(data, 32, images.DecodeLimits(max_pixels=1999))
