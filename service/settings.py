"""Service settings, read from ``VINTED_TAGGER_*`` environment variables (defaults suit one small box)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from embed.images import DecodeLimits

ENV_PREFIX = "VINTED_TAGGER_"
MB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    max_file_mb: float = 10.0  # one image's upload size
    max_files: int = 16  # images in one request
    max_request_mb: float = 50.0  # a whole multipart body (bounds the memory one request can hold)
    # Encoder scheduling. Defaults measured with bench/service_bench.py on a 2-core CPU box, where one
    # EfficientNet-Lite2 image costs less CPU alone than inside a batch (activations outgrow the caches):
    # two sessions side by side, one image per call, each call free to use every core when alone.
    # Batching (max_batch > 1) pays where a call has a high fixed cost (a GPU, many cores).
    batch_window_ms: float = 2.0  # how long a batch waits for images that are still being decoded
    max_batch: int = 1  # images in one encoder call
    encoder_workers: int = 2  # encoder calls running at once, each on its own ONNX Runtime session
    encoder_threads: int = 0  # ONNX Runtime intra-op threads per call; 0 = all cores
    max_pending: int = 256  # images queued or decoding at once; beyond it requests get 503 (memory stays bounded)
    decode_threads: int = 0  # image decode pool; 0 = all cores
    runtime: str = "auto"  # encoder runtime and precision (embed.encoders.VARIANTS); auto = the fastest that
    precision: str = "auto"  # keeps the model's decisions, as for `embed`
    # Decode budget per image, judged from its header (embed/images.py), stricter than the command line's:
    # pixels decoded (a JPEG after draft reduction: a 200 MP photo decodes ~3 MP) and peak decode memory.
    decode_max_megapixels: float = 24.0
    decode_max_mb: float = 192.0
    decode_max_frames: int = 100
    # Images that need more than heavy_decode_mb of decode memory, or declare more than heavy_decode_mb million
    # pixels (a big JPEG entropy-decodes all of them even in draft mode), take a separate lane, heavy_decodes
    # at a time, and at most max_heavy_pending of them are admitted at once: decode-heavy uploads wait for
    # each other instead of taking the decode threads every ordinary photo needs.
    heavy_decode_mb: float = 24.0
    heavy_decodes: int = 1
    max_heavy_pending: int = 16
    shutdown_timeout_s: float = 5.0  # on SIGTERM, requests still open after this are cut off

    def __post_init__(self) -> None:
        positive = [self.max_file_mb, self.max_files, self.max_batch, self.max_pending, self.encoder_workers,
                    self.decode_max_megapixels, self.decode_max_mb, self.decode_max_frames, self.heavy_decodes,
                    self.max_heavy_pending, self.shutdown_timeout_s]
        non_negative = [self.batch_window_ms, self.encoder_threads, self.decode_threads]
        if min(positive) <= 0 or min(non_negative) < 0 or self.max_request_mb < self.max_file_mb:
            raise ValueError(f"settings out of range: {self}")

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * MB)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_request_mb * MB)

    @property
    def decode_limits(self) -> DecodeLimits:
        return DecodeLimits(int(self.decode_max_megapixels * 1e6), int(self.decode_max_mb * MB), self.decode_max_frames)

    @property
    def heavy_decode_work(self) -> int:
        return int(self.heavy_decode_mb * MB)

    @classmethod
    def from_env(cls, environ: dict | None = None, **overrides) -> Settings:
        """Defaults, then ``VINTED_TAGGER_<FIELD>`` variables (e.g. VINTED_TAGGER_MAX_FILE_MB), then overrides."""
        environ = os.environ if environ is None else environ
        values = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(ENV_PREFIX + field.name.upper())
            if raw is None or raw.strip() == "":
                continue
            kind = {"float": float, "int": int, "str": str}[field.type]
            try:
                values[field.name] = kind(raw)
            except ValueError:
                raise ValueError(f"{ENV_PREFIX}{field.name.upper()}={raw!r} is not a valid {kind.__name__}") from None
        return cls(**{**values, **overrides})
