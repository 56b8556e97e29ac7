"""Run an encoder on ONNX Runtime: no torch at prediction or serving time.

Each encoder is exported once to ``$VINTED_TAGGER_HOME/encoders/<slug>/model.onnx`` (default home:
``~/.cache/vinted-tagger``) next to ``spec.json``, which records the spec (weights checksum included) and
the ONNX file's own checksum. ``Encoder.load`` finds that file, verifies it, and exports it first when it is
missing and torch is installed.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from embed.cache import atomic_write_json
from embed.encoders import EncoderSpec, file_sha256, get_encoder
from embed.images import ImageError, load_pixels, resize_shorter_crop, to_rgb


def encoder_home() -> Path:
    return Path(os.environ.get("VINTED_TAGGER_HOME", "~/.cache/vinted-tagger")).expanduser()


def encoder_dir(spec: EncoderSpec) -> Path:
    return encoder_home() / "encoders" / spec.slug


def versions() -> dict:
    """Versions of the libraries that shape an embedding, for manifests."""
    names = ["vinted-tagger", "onnxruntime", "numpy", "pillow", "torch", "timm", "open_clip_torch"]
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def ensure_onnx(spec: EncoderSpec) -> tuple[Path, EncoderSpec]:
    """Path of the encoder's ONNX file (exported now if missing) and the spec with its checksum."""
    folder = encoder_dir(spec)
    model, spec_file = folder / "model.onnx", folder / "spec.json"
    if not (model.exists() and spec_file.exists()):
        _export(spec, folder)
    recorded = json.loads(spec_file.read_text())
    if file_sha256(model) != recorded["onnx_sha256"]:
        raise RuntimeError(f"{model} does not match its recorded checksum; delete {folder} and export again")
    return model, EncoderSpec.from_dict(recorded["spec"])


def _export(spec: EncoderSpec, folder: Path) -> None:
    try:
        from embed.export import build_embedder, export_onnx
    except ImportError as error:
        raise RuntimeError(
            f"the ONNX file for encoder {spec.name!r} is not built and PyTorch is not installed ({error}); "
            "run `make setup` or `pip install 'vinted-tagger[export]'` then `embed --export-only`"
        ) from None
    folder.mkdir(parents=True, exist_ok=True)
    module, spec = build_embedder(spec)
    temp = folder / f".model.{os.getpid()}.onnx.tmp"
    export_onnx(module, spec, temp)
    record = {"spec": spec.to_dict(), "onnx_sha256": file_sha256(temp), "versions": versions()}
    os.replace(temp, folder / "model.onnx")
    atomic_write_json(folder / "spec.json", record)


def session_options(threads: int | None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    # Spinning threads would burn the cores that decode the next batch.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class Encoder:
    """An ONNX Runtime session that maps uint8 pixels (N, S, S, 3) to embeddings (N, dim)."""

    def __init__(self, spec: EncoderSpec, onnx_path: Path, threads: int | None = None):
        self.spec = spec
        self.onnx_path = Path(onnx_path)
        self.session = ort.InferenceSession(
            str(onnx_path), session_options(threads), providers=["CPUExecutionProvider"]
        )

    @classmethod
    def load(cls, spec: EncoderSpec | dict | str, threads: int | None = None) -> Encoder:
        if isinstance(spec, str):
            spec = get_encoder(spec)
        elif isinstance(spec, dict):
            spec = EncoderSpec.from_dict(spec)
        path, resolved = ensure_onnx(spec)
        if spec.sha256 and resolved.sha256 != spec.sha256:
            raise RuntimeError(f"{path} was exported from other weights than {spec.name} asks for")
        return cls(dataclasses.replace(resolved, name=spec.name), path, threads)

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        if len(pixels) == 0:
            return np.zeros((0, self.spec.dim), np.float32)
        return self.session.run(None, {"pixels": np.ascontiguousarray(pixels, dtype=np.uint8)})[0]

    def pixels(self, image: bytes | Image.Image) -> np.ndarray:
        """One image (encoded bytes or PIL image) -> encoder input; raises ImageError."""
        if isinstance(image, Image.Image):
            return resize_shorter_crop(to_rgb(image), self.spec.input_size)
        return load_pixels(image, self.spec.input_size)

    def embed_images(self, images: Sequence[bytes | Image.Image]) -> tuple[np.ndarray, list[str | None]]:
        """Embeddings for a batch of images; a failed image gets a NaN row and its reason."""
        batch, errors = [], []
        for image in images:
            try:
                batch.append(self.pixels(image))
                errors.append(None)
            except ImageError as error:
                errors.append(str(error))
        vectors = np.full((len(images), self.spec.dim), np.nan, np.float32)
        ok = [i for i, error in enumerate(errors) if error is None]
        if ok:
            vectors[ok] = self.encode(np.stack(batch))
        return vectors, errors
