"""The service answers every listed photo format (embed.images.PHOTO_FORMATS) with 200, and exotic or broken
files with 422 and a code, never 5xx; the page's file input offers exactly that list."""

from __future__ import annotations

from pathlib import Path

import pytest
from photo_kinds import WRITERS, cmyk_jpeg, encode, p3_photo, photo_as, png16, rgba_png, rotated_as

pytest.importorskip("fastapi", reason="pip install 'vinted-tagger[serve]'")
from fastapi.testclient import TestClient  # noqa: E402

from embed.images import PHOTO_FORMATS, accept_attribute  # noqa: E402
from service.app import create_app  # noqa: E402
from service.settings import Settings  # noqa: E402


@pytest.fixture(scope="module")
def client(service_model: Path):
    with TestClient(create_app(service_model, Settings()), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def photo(picture):
    return picture(5, (300, 200))


def predict(client, name: str, data: bytes, mime: str = "application/octet-stream"):
    return client.post("/v1/predict", files=[("files", (name, data, mime))])


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_every_listed_format_is_answered(client, photo, fmt: str) -> None:
    mime = (PHOTO_FORMATS[fmt][0] or ("application/octet-stream",))[0]
    response = predict(client, f"photo{PHOTO_FORMATS[fmt][1][0]}", photo_as(photo, fmt), mime)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("make", [cmyk_jpeg, png16, rgba_png, p3_photo, lambda image: rotated_as(image, "HEIF")],
                         ids=["cmyk", "16-bit", "alpha", "p3", "rotated-heic"])
def test_phone_and_camera_kinds_are_answered(client, photo, make) -> None:
    assert predict(client, "photo.heic", make(photo)).status_code == 200  # the name's suffix plays no part


@pytest.mark.parametrize(("fmt", "code"), [("TGA", "not_a_photo_format"), ("PCX", "not_a_photo_format"),
                                           ("ICO", "not_a_photo_format"), ("PPM", "not_a_photo_format")])
def test_exotic_formats_get_422_with_their_name(client, photo, fmt: str, code: str) -> None:
    response = predict(client, "photo.jpg", encode(photo.resize((64, 64)), fmt))
    assert response.status_code == 422
    assert response.json()["error"] == {"code": code, "message": f"not a photo format ({fmt})"}


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF", "WEBP", "TIFF"])
def test_broken_photos_get_422_never_5xx(client, photo, fmt: str) -> None:
    data = photo_as(photo, fmt)
    for broken in (data[: len(data) // 2], data[:40], data[:12] + bytes(400)):
        response = predict(client, "photo", broken)
        assert response.status_code == 422, (len(broken), response.text)
        assert response.json()["error"]["code"] in ("corrupt_image", "not_an_image", "not_a_photo_format")


def test_the_page_offers_the_listed_formats(client) -> None:
    html = client.get("/").text
    assert f'accept="{accept_attribute()}"' in html and "{{" not in html


def test_decoder_chatter_stays_out_of_the_service_log(service_model: Path, photo, tmp_path: Path) -> None:
    """libtiff writes "Using code not yet in table" to fd 2 itself, Pillow logs and warns: none of it reaches
    the log of a real `python -m service`, and the broken TIFF still gets its 422."""
    import os
    import subprocess
    import sys

    import httpx
    from test_service import free_port, wait_ready

    data = bytearray(photo_as(photo, "TIFF"))
    data[300:600] = bytes(b ^ 0x55 for b in data[300:600])
    port, log_path = free_port(), tmp_path / "server.log"
    command = [sys.executable, "-m", "service", "--model", str(service_model), "--port", str(port)]
    root = Path(__file__).resolve().parents[1]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=root, stdout=log, stderr=subprocess.STDOUT, text=True, env=os.environ)
    try:
        wait_ready(process, f"http://127.0.0.1:{port}")
        response = httpx.post(f"http://127.0.0.1:{port}/v1/predict", files=[("files", ("x.tif", bytes(data)))],
                              timeout=30)
        assert response.status_code == 422 and response.json()["error"]["code"] == "corrupt_image", response.text
    finally:
        process.terminate()
        process.wait(timeout=30)
    lines = log_path.read_text().splitlines()
    # Only the service's own lines: timestamped log lines and JSON access lines (libtiff's would be bare text).
    assert len(lines) > 3 and all(line.startswith(("{", "20", "vinted-serve:")) for line in lines), lines
