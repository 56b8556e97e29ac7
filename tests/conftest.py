"""Shared test fixtures.

Session-wide and automatic: ``VINTED_TAGGER_HOME`` points at a temporary folder, so no test reads or writes
the user's ``~/.cache/vinted-tagger``. Encoders are exported to ONNX once per session (EfficientNet-Lite2
takes seconds) and shared; ``tiny_clip`` is a randomly initialised, very small open_clip model saved as a
local checkpoint, for fast pipeline tests and for the ``open_clip:<arch>:<file>`` path.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# --- isolation ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def tagger_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private VINTED_TAGGER_HOME for the whole session (exported encoders land here)."""
    home = tmp_path_factory.mktemp("vinted-tagger-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VINTED_TAGGER_HOME", str(home))
        yield home


# --- encoders -------------------------------------------------------------------------------------------

TINY_CLIP_ARCH = "tiny-test"
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 64, "heads": 2, "layers": 1},
}


@dataclass(frozen=True)
class TinyClip:
    name: str  # encoder name: open_clip:tiny-test:<checkpoint>
    checkpoint: Path
    sha256: str
    dim: int = TINY_CLIP_CONFIG["embed_dim"]
    input_size: int = TINY_CLIP_CONFIG["vision_cfg"]["image_size"]


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> TinyClip:
    """A tiny open_clip architecture registered with open_clip, randomly initialised, saved as a state dict."""
    import open_clip
    import torch

    folder = tmp_path_factory.mktemp("tiny-clip")
    (folder / f"{TINY_CLIP_ARCH}.json").write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_CLIP_ARCH)
    checkpoint = folder / f"{TINY_CLIP_ARCH}.pt"
    torch.save(model.state_dict(), checkpoint)
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    return TinyClip(name=f"open_clip:{TINY_CLIP_ARCH}:{checkpoint}", checkpoint=checkpoint, sha256=digest)


@pytest.fixture(scope="session")
def tiny_encoder(tiny_clip: TinyClip):
    """The tiny open_clip encoder on ONNX Runtime (exported on first use)."""
    from embed.runtime import Encoder

    with _quiet_export():
        return Encoder.load(tiny_clip.name, threads=1, runtime="onnxruntime", precision="fp32")


@pytest.fixture(scope="session")
def lite2_encoder():
    """EfficientNet-Lite2 on ONNX Runtime, exported once per session."""
    from embed.runtime import Encoder

    with _quiet_export():
        return Encoder.load("efficientnet-lite2", threads=2, runtime="onnxruntime", precision="fp32")


@contextlib.contextmanager
def _quiet_export():
    """Silence the warnings every ONNX export prints (expected, and noise in test output): the TorchScript
    exporter's deprecation notice, and tracer notes on open_clip's constant shape checks."""
    from torch.jit import TracerWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
        warnings.simplefilter("ignore", TracerWarning)
        yield


# --- images ---------------------------------------------------------------------------------------------


def _picture(seed: int = 0, size: tuple[int, int] = (96, 72)) -> Image.Image:
    from skimage import data

    source = data.astronaut()  # 512 x 512
    rng = np.random.default_rng(seed)
    side = int(rng.integers(96, 320))
    top, left = (int(v) for v in rng.integers(0, 512 - side, size=2))
    crop = Image.fromarray(source[top : top + side, left : left + side])
    return crop.resize(size, Image.BICUBIC)


def _image_bytes(image: Image.Image, fmt: str = "JPEG", **save_kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save_kwargs)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def picture() -> Callable[..., Image.Image]:
    """``picture(seed=0, size=(w, h))``: a small natural RGB image (a crop of scikit-image's astronaut);
    each seed gives another crop, so different seeds give clearly different embeddings."""
    return _picture


@pytest.fixture(scope="session")
def image_bytes() -> Callable[..., bytes]:
    """``image_bytes(image, fmt="JPEG", **save_kwargs)``: a PIL image encoded as a file would hold it."""
    return _image_bytes


@pytest.fixture(scope="session")
def write_image() -> Callable[..., Path]:
    """``write_image(path, seed=0, size=(w, h))`` saves ``picture(seed, size)`` (PNG for .png, else JPEG)."""

    def write(path: Path, seed: int = 0, size: tuple[int, int] = (96, 72)) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = {".png": "PNG", ".tiff": "TIFF", ".tif": "TIFF"}.get(path.suffix.lower(), "JPEG")
        path.write_bytes(_image_bytes(_picture(seed, size), fmt))
        return path

    return write


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR declaring a huge 1-bit image, with a token IDAT: a decompression bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _bad_exif_jpeg() -> bytes:
    """Orientation 6 plus an ASCII value under BitsPerSample (0x0102, a SHORT tag): Pillow reads the
    orientation, then fails when it rewrites the EXIF block."""
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "Cam"  # Orientation, Make (ASCII)
    good = exif.tobytes()
    broken = good.replace(b"\x01\x0f\x00\x02", b"\x01\x02\x00\x02")  # retag Make as BitsPerSample
    assert broken != good
    return _image_bytes(_picture(0), "JPEG", exif=broken)


@pytest.fixture(scope="session")
def broken_image() -> Callable[[str], tuple[bytes, str]]:
    """``broken_image(kind) -> (bytes, reason regex)``: files that are not usable images, and the words the
    failure reason must contain. Kinds: zero-bytes, text, truncated-jpeg, garbled-jpeg-header,
    corrupt-png-data, bomb, bad-exif."""

    def make(kind: str) -> tuple[bytes, str]:
        jpeg, png = _image_bytes(_picture(0), "JPEG"), _image_bytes(_picture(0), "PNG")
        return {
            "zero-bytes": (b"", "empty file"),
            "text": (b"this is a text file, not a picture\n", "not an image"),
            "truncated-jpeg": (jpeg[: len(jpeg) // 3], "corrupt or truncated image"),
            "garbled-jpeg-header": (jpeg[:20] + bytes(range(256)) * 4, "corrupt or truncated image"),
            # valid header, broken compressed stream
            "corrupt-png-data": (png[:60] + b"\0" * 200 + png[260:], "corrupt or truncated image"),
            "bomb": (_png_header_only(20000, 20000), "decompression bomb"),
            "bad-exif": (_bad_exif_jpeg(), "corrupt EXIF"),
        }[kind]

    return make


# --- a trained model for the service ---------------------------------------------------------------------

SERVICE_CLASSES = ["BLOUSES", "SHIRTS", "TANK_TOPS"]
SERVICE_TAGS = ["polka dot", "floral"]


@pytest.fixture(scope="session")
def service_model(tmp_path_factory, lite2_encoder, picture) -> Path:
    """A tiny tagger (3 classes, 2 tags, logistic heads) trained on real Lite2 embeddings of 30 pictures;
    the service and page tests serve it."""
    import pandas as pd

    from classifiers.artifacts import save_model
    from classifiers.train import train
    from embed.cache import Embeddings

    images = [picture(seed) for seed in range(100, 130)]
    vectors, errors = lite2_encoder.embed_images(images)
    assert not any(errors)
    uuids = [f"img{i:03d}" for i in range(len(images))]
    labels = pd.DataFrame(
        {
            "uuid": uuids,
            "cc3": [SERVICE_CLASSES[i % 3] for i in range(len(images))],
            "polka dot": [i % 2 for i in range(len(images))],
            "floral": [(i // 2) % 2 for i in range(len(images))],
        }
    )
    embeddings = Embeddings({"encoder": lite2_encoder.spec.to_dict()}, np.array(uuids), vectors)
    folder = tmp_path_factory.mktemp("service-model")
    save_model(train(labels, embeddings, head="logreg", n_jobs=1, tags=SERVICE_TAGS), folder)
    return folder


# --- Ray (issue 12: embed --engine ray) -----------------------------------------------------------------


@pytest.fixture(scope="session")
def ray_cluster(tagger_home: Path):
    """One local Ray cluster (2 CPUs) for the whole session; its workers see this session's encoder home."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'vinted-tagger[ray]')")
    from embed.engines.ray import start_local

    repo = str(Path(__file__).resolve().parents[1])
    start_local(ray, num_cpus=2, env={"VINTED_TAGGER_HOME": str(tagger_home), "PYTHONPATH": repo})  # loopback only
    yield ray
    ray.shutdown()
