"""The encoder's int8 copy: ONNX Runtime static quantisation of the exported graph, calibrated on a fixed,
seeded sample of training images (``embed --calibrate SOURCE --ids TRAIN.parquet``).

QDQ format, per-channel int8 weights, uint8 activations (U8S8: the pair both ONNX Runtime and OpenVINO run
with VNNI), MinMax ranges. The same sample gives the same file, byte for byte: the sample is drawn with a
fixed seed from the uuids sorted, and its fingerprint (uuids and image bytes) is stored in ``int8.json``
beside ``model.int8.onnx``, with the file's checksum and the checksum of the fp32 export it came from.
Build time only: needs the ``onnx`` package ([export] extra).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path

import numpy as np

from embed.encoders import EncoderSpec
from embed.images import ImageError, load_pixels
from embed.runtime import INT8_FILE, INT8_RECORD, encoder_dir, ensure_onnx, versions
from embed.sources import ImageRef
from vinted_tagger.errors import MissingExtra
from vinted_tagger.files import atomic_path, file_sha256, write_json

CALIBRATION_IMAGES = 256
CALIBRATION_SEED = 0
CALIBRATION_BATCH = 8  # images per calibration run: the augmented graph's memory grows with it


def calibration_sample(refs: list[ImageRef], count: int = CALIBRATION_IMAGES,
                       seed: int = CALIBRATION_SEED) -> list[ImageRef]:
    """``count`` refs drawn with ``seed`` from the refs sorted by uuid (independent of listing order)."""
    ordered = sorted(refs, key=lambda ref: ref.uuid)
    if len(ordered) <= count:
        return ordered
    picked = np.random.default_rng(seed).choice(len(ordered), size=count, replace=False)
    return [ordered[i] for i in sorted(picked)]


def calibration_pixels(refs: list[ImageRef], size: int) -> tuple[np.ndarray, str]:
    """Decoded pixels of the sample (unreadable images left out) and its fingerprint."""
    digest = hashlib.sha256()
    pixels = []
    for ref in refs:
        data = ref.read()
        try:
            pixels.append(load_pixels(data, size, decoder="pillow"))  # one decoder for the ranges, whatever is installed
        except ImageError:
            continue
        digest.update(ref.uuid.encode() + b"\0" + hashlib.sha256(data).digest())
    if not pixels:
        raise ValueError("no readable image in the calibration sample")
    return np.stack(pixels), digest.hexdigest()


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader protocol over fixed batches."""

    def __init__(self, pixels: np.ndarray):
        self.batches = iter([{"pixels": pixels[i : i + CALIBRATION_BATCH]}
                             for i in range(0, len(pixels), CALIBRATION_BATCH)])

    def get_next(self):
        return next(self.batches, None)


def calibrate(spec: EncoderSpec, refs: list[ImageRef], count: int = CALIBRATION_IMAGES,
              seed: int = CALIBRATION_SEED) -> dict:
    """Quantise the encoder's export to int8 on a seeded sample of ``refs``; returns the stored record."""
    fp32_path, spec = ensure_onnx(spec)
    sample = calibration_sample(refs, count, seed)
    pixels, fingerprint = calibration_pixels(sample, spec.input_size)
    folder = encoder_dir(spec)
    with atomic_path(folder / INT8_FILE) as temp:
        with _quiet_root_log():  # it logs advice to pre-process (shape inference) on the root logger
            _quantize(fp32_path, temp, pixels)
        record = {
            "onnx_sha256": file_sha256(temp),
            "fp32_sha256": file_sha256(fp32_path),
            "calibration": {"images": len(pixels), "seed": seed, "fingerprint": fingerprint, "method": "minmax",
                            "format": "QDQ U8S8 per-channel"},
            "versions": versions(),
        }
    write_json(folder / INT8_RECORD, record)
    return record


def _quantize(source: Path, target: Path, pixels: np.ndarray) -> None:
    try:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    except ImportError as error:
        raise MissingExtra(f"int8 calibration needs the onnx package: pip install 'vinted-tagger[export]' "
                           f"({error})") from None

    quantize_static(  # the calibrator's augmented graph goes to a temporary folder of its own
        str(source), str(target), _Reader(pixels),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        calibration_providers=["CPUExecutionProvider"],
    )


@contextlib.contextmanager
def _quiet_root_log():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
