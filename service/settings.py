"""Service settings, read from ``VINTED_TAGGER_*`` environment variables (defaults suit one small box)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

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

    def __post_init__(self) -> None:
        positive = [self.max_file_mb, self.max_files, self.max_batch, self.max_pending, self.encoder_workers]
        non_negative = [self.batch_window_ms, self.encoder_threads, self.decode_threads]
        if min(positive) <= 0 or min(non_negative) < 0 or self.max_request_mb < self.max_file_mb:
            raise ValueError(f"settings out of range: {self}")

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * MB)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_request_mb * MB)

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
