"""The service's settings: ``VINTED_TAGGER_<FIELD>`` variables (or ``vinted-serve --<field>`` flags), read and
validated by the shared settings machinery of ``vinted_tagger.settings`` (a bad value is one line naming the
variable). Needs no FastAPI: ``vinted-serve`` reads them before it knows whether the serve extra is there."""

from __future__ import annotations

from pydantic import model_validator

from embed.images import DecodeLimits
from vinted_tagger.settings import MB, _Settings


class Settings(_Settings):
    """The REST service's knobs (defaults suit one small box; ``auto`` ones are measured at start-up)."""

    max_file_mb: float = 10.0  # one image's upload size
    max_files: int = 16  # images in one request
    max_request_mb: float = 50.0  # a whole multipart body (bounds the memory one request can hold)
    # Encoder scheduling. A lone image runs on the encoder's low-latency path; images of concurrent requests
    # are encoded together on its throughput path (service/batcher.py, embed.runtime.OpenVinoRunner).
    max_batch: int = 0  # images in one encoder call; 0 = auto: measured at start-up (service/tuning.py)
    batch_window_ms: float = -1.0  # how long a batch waits for images still being decoded; < 0 = auto (the
    # encoder's measured time for one image: waiting longer than that would cost more than it saves)
    encoder_workers: int = 0  # encoder calls running at once; 0 = auto: one session, one worker per stream of
    # it (each takes the next batch when its own is done); n > 0: n sessions, each taking whole batches
    encoder_threads: int = 0  # runtime threads per session; 0 = all cores
    max_pending: int = 256  # images queued or decoding at once; beyond it requests get 503 (memory stays bounded)
    decode_threads: int = 0  # image decode pool; 0 = all cores
    runtime: str = "auto"  # encoder runtime and precision (embed.variants.VARIANTS); auto = the fastest that
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

    @model_validator(mode="after")
    def _in_range(self):
        positive = [self.max_file_mb, self.max_files, self.max_pending,
                    self.decode_max_megapixels, self.decode_max_mb, self.decode_max_frames, self.heavy_decodes,
                    self.max_heavy_pending, self.shutdown_timeout_s]
        non_negative = [self.max_batch, self.encoder_workers, self.encoder_threads, self.decode_threads]
        if min(positive) <= 0 or min(non_negative) < 0 or self.max_request_mb < self.max_file_mb:
            raise ValueError(f"settings out of range: {self!r}")
        return self

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * MB)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_request_mb * MB)

    @property
    def heavy_decode_work(self) -> int:
        return int(self.heavy_decode_mb * MB)

    @property
    def decode_limits(self) -> DecodeLimits:
        return DecodeLimits(int(self.decode_max_megapixels * 1e6), int(self.decode_max_mb * MB), self.decode_max_frames)
