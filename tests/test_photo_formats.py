"""Every photo format a seller's phone or camera writes is read by its bytes, from the one list
(embed.images.PHOTO_FORMATS), and gives the same encoder input as its JPEG; exotic formats are named; decoder
chatter never reaches stderr raw. Photos are made in the test (tests/photo_kinds.py)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from photo_kinds import (
    WRITERS,
    cmyk_jpeg,
    display_p3_profile,
    encode,
    p3_photo,
    photo_as,
    png16,
    rgba_png,
    rotated_as,
)
from PIL import Image

from embed import chatter
from embed.images import (
    FORMATS,
    PHOTO_FORMATS,
    DecodeLimits,
    ImageError,
    accept_attribute,
    load_pixels,
    rgb_profile,
    sniff,
)
from embed.sources import list_sources

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64
# Pillow's own test images (Tests/images of github.com/python-pillow/Pillow), when a copy is at hand.
PILLOW_IMAGES = Path(os.environ.get("VINTED_TAGGER_PILLOW_IMAGES") or ROOT.parent / "shared" / "pillow-images")


@pytest.fixture(scope="module")
def upright(picture) -> Image.Image:
    return picture(7, (240, 160))


def pixels(data: bytes, limits: DecodeLimits | None = None) -> np.ndarray:
    return load_pixels(data, SIZE, *(limits,) if limits else ()).astype(np.float32)


def test_the_list_covers_what_phones_write_and_pillow_opens_it_all() -> None:
    assert set(PHOTO_FORMATS) - set(FORMATS) == {"MPO"}  # Pillow opens MPO through its JPEG plugin
    assert set(PHOTO_FORMATS) >= {"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF"}
    accept = accept_attribute().split(",")
    assert {"image/heic", ".heic", "image/avif", ".avif", "image/jpeg", ".mpo"} <= set(accept)
    assert len(accept) == len(set(accept))


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_each_listed_format_gives_the_pixels_of_its_png(upright, fmt: str) -> None:
    data = photo_as(upright, fmt)
    assert sniff(data) in (fmt, "JPEG" if fmt == "MPO" else fmt, "BMP" if fmt == "DIB" else fmt)
    error = np.abs(pixels(data) - pixels(photo_as(upright, "PNG"))).mean()
    assert error < (0.5 if WRITERS[fmt][2] else 6.0), error


@pytest.mark.parametrize("fmt", ["JPEG", "HEIF"])
def test_exif_rotation_is_applied_for_heic_as_for_jpeg(upright, fmt: str) -> None:
    want = pixels(encode(upright, fmt, quality=95))
    got = pixels(rotated_as(upright, fmt))
    assert np.abs(got - want).mean() < 4.0
    assert np.abs(np.rot90(got) - want).mean() > 20.0  # an unrotated result would be far off


@pytest.mark.parametrize("make", [cmyk_jpeg, png16, rgba_png], ids=["cmyk", "16-bit", "alpha"])
def test_camera_and_editor_modes_decode_to_rgb(upright, make) -> None:
    got = load_pixels(make(upright), SIZE)
    assert got.shape == (SIZE, SIZE, 3) and got.dtype == np.uint8 and got.std() > 10


def test_a_display_p3_photo_is_converted_to_srgb(upright) -> None:
    want = pixels(photo_as(upright, "PNG"))
    tagged = p3_photo(upright)
    untagged = encode(Image.fromarray(np.asarray(Image.open(io.BytesIO(tagged)))), "PNG")  # same pixels, no profile
    assert np.abs(pixels(tagged) - want).mean() < 1.5
    assert np.abs(pixels(untagged) - want).mean() > 3 * np.abs(pixels(tagged) - want).mean()
    assert rgb_profile(Image.open(io.BytesIO(tagged))) == display_p3_profile()


def test_a_broken_profile_keeps_the_pixels(upright) -> None:
    data = encode(upright, "PNG", icc_profile=display_p3_profile()[:200])
    assert np.abs(pixels(data) - pixels(photo_as(upright, "PNG"))).mean() < 0.5


def test_formats_by_content_not_suffix(tmp_path, upright) -> None:
    jpeg = encode(upright, "JPEG", quality=95)
    (tmp_path / "wrong-suffix.png").write_bytes(jpeg)
    (tmp_path / "jpeg-named.heic").write_bytes(jpeg)
    (tmp_path / "no-suffix").write_bytes(photo_as(upright, "HEIF"))
    (tmp_path / "sidecar.aae").write_text("<?xml version='1.0'?><plist/>")  # what an iPhone export adds
    refs, skipped = list_sources([tmp_path])
    assert sorted(r.uuid for r in refs) == ["jpeg-named", "no-suffix", "wrong-suffix"]
    assert [(Path(s.origin).name, s.kind) for s in skipped] == [("sidecar.aae", "ignored")]
    for ref in refs:
        assert np.abs(pixels(ref.read()) - pixels(jpeg)).mean() < 6.0


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF", "WEBP", "TIFF"])
def test_truncated_photos_fail_with_a_reason(upright, fmt: str) -> None:
    data = photo_as(upright, fmt)
    with pytest.raises(ImageError) as caught:
        load_pixels(data[: len(data) // 2], SIZE)
    assert caught.value.code == "corrupt_image", caught.value


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF", "WEBP", "TIFF", "GIF", "BMP"])
def test_decode_budgets_hold_for_every_format(picture, fmt: str) -> None:
    data = photo_as(picture(1, (1200, 900)), fmt)
    with pytest.raises(ImageError) as caught:
        load_pixels(data, SIZE, DecodeLimits(max_pixels=1_000_000))
    assert caught.value.code == "decompression_bomb", caught.value


def test_a_heif_with_too_many_frames_is_refused(picture) -> None:
    frames = [picture(i, (32, 32)) for i in range(4)]
    data = encode(frames[0], "HEIF", save_all=True, append_images=frames[1:])
    with pytest.raises(ImageError, match="too many frames"):
        load_pixels(data, SIZE, DecodeLimits(max_frames=3))


def test_warnings_while_decoding_go_to_the_image_not_stderr(monkeypatch, capsys) -> None:
    monkeypatch.setattr(warnings, "showwarning", chatter._show)  # pytest records warnings its own way
    before = chatter.warnings_count()
    with chatter.collecting() as said:
        warnings.warn_explicit("Corrupt EXIF data", UserWarning, "PIL/TiffImagePlugin.py", 1, module="PIL.x")
    assert said == ["UserWarning: Corrupt EXIF data"] and chatter.warnings_count() == before + 1
    assert capsys.readouterr().err == ""


def test_c_library_lines_on_fd2_are_counted_not_printed(upright, tmp_path) -> None:
    """libtiff writes its messages to fd 2 itself; run in a child so that pytest's own capture stays out."""
    lzw = bytearray(photo_as(upright, "TIFF"))
    lzw[200:400] = bytes(b ^ 0x55 for b in lzw[200:400])
    (tmp_path / "broken.tif").write_bytes(bytes(lzw))
    script = textwrap.dedent(f"""
        import sys
        from embed.chatter import c_messages_captured
        from embed.images import ImageError, load_pixels
        with c_messages_captured() as messages:
            try:
                load_pixels(open({str(tmp_path / "broken.tif")!r}, "rb").read(), 32)
            except ImageError as error:
                print("failed:", error, file=sys.stderr)
        print("captured", messages.lines, file=sys.stderr)
    """)
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = child.stderr.splitlines()
    assert lines[0].startswith("failed: corrupt or truncated image") and len(lines) == 2, child.stderr
    assert int(lines[1].split()[1]) >= 1, child.stderr  # libtiff's "Using code not yet in table" and such


@pytest.mark.skipif(not PILLOW_IMAGES.is_dir(), reason=f"no copy of Pillow's Tests/images at {PILLOW_IMAGES} "
                    "(set VINTED_TAGGER_PILLOW_IMAGES to one)")
def test_pillow_test_images_decode_or_fail_cleanly() -> None:
    """Every file of Pillow's own corpus: an array or an ImageError with a known code, nothing else; every
    file Pillow decodes in a listed format is decoded here too."""
    refs, skipped = list_sources([PILLOW_IMAGES], key="path")
    assert refs
    missed = [f"{s.origin}: {s.reason}" for s in skipped if pillow_decodes(Path(s.origin).read_bytes())]
    for ref in refs:
        try:
            load_pixels(ref.read(), SIZE)
        except ImageError as error:
            assert error.code in ImageError.CODES
            if error.code not in ("decompression_bomb", *ImageError.IGNORED) and pillow_decodes(ref.read()):
                missed.append(f"{ref.origin}: {error}")
    assert not missed, missed


def pillow_decodes(data: bytes) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            image.load()
        return image.width * image.height < 50_000_000
    except Exception:  # noqa: BLE001
        return False
