"""Every setting read from the environment, with its default: ``VINTED_TAGGER_<NAME>`` variables.

    VINTED_TAGGER_HOME    where exported encoders live (default ~/.cache/vinted-tagger)
    VINTED_TAGGER_MODEL   the default model folder (default: the packaged artifacts/model)
    VINTED_TAGGER_<FIELD> the service's knobs, one per field of ``ServiceSettings`` (e.g. VINTED_TAGGER_MAX_FILE_MB)

pydantic-settings reads and validates them; an empty or blank variable counts as unset. A bad value is a
``SettingsError``: one line naming the variable, which every command line reports as a user's mistake.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from vinted_tagger.errors import UserError

ENV_PREFIX = "VINTED_TAGGER_"
MB = 1024 * 1024
WORKER_VARIABLES = (ENV_PREFIX + "HOME", "PYTHONPATH")  # what a worker process (Ray) must see as this one does


class SettingsError(UserError, ValueError):
    """A ``VINTED_TAGGER_*`` variable (or an override) with a bad value."""


class _Environment(EnvSettingsSource):
    """The variables of ``environ`` (default: this process's), blank ones left out."""

    def __init__(self, settings_cls, environ: Mapping[str, str] | None = None) -> None:
        self.environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self):
        environ = os.environ if self.environ is None else self.environ
        return {name.lower(): value for name, value in environ.items() if value.strip()}  # names: any case


class _Settings(BaseSettings):
    """Defaults, then ``VINTED_TAGGER_<FIELD>`` variables, then keyword arguments; frozen once made."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    def __init__(self, **values) -> None:
        try:
            super().__init__(**values)
        except ValidationError as error:
            raise SettingsError(describe(error)) from None

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        return init_settings, _Environment(settings_cls)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides):
        """Defaults, then this process's variables, then those of ``environ`` (tests), then ``overrides``."""
        values = {} if environ is None else _Environment(cls, environ)()
        return cls(**{**values, **overrides})


def describe(error: ValidationError) -> str:
    """A validation error as one line naming the variable: ``VINTED_TAGGER_MAX_FILES='x' is not a valid int``."""
    lines = []
    for problem in error.errors():
        name = ENV_PREFIX + "_".join(str(part) for part in problem["loc"]).upper()
        if problem["type"] in ("int_parsing", "float_parsing", "int_from_float"):
            lines.append(f"{name}={problem['input']!r} is not a valid {problem['type'].split('_')[0]}")
        elif problem["type"] == "value_error" and not problem["loc"]:
            lines.append(str(problem["ctx"]["error"]))
        else:
            lines.append(f"{name}={problem['input']!r}: {problem['msg']}")
    return "; ".join(lines)


class Paths(_Settings):
    """Where the product finds its files."""

    home: Path = Path("~/.cache/vinted-tagger")  # VINTED_TAGGER_HOME: exported encoders, encoders/<slug>/
    model: Path | None = None  # VINTED_TAGGER_MODEL: the default model folder (None: the packaged one)

    @field_validator("home")
    @classmethod
    def _expand(cls, home: Path) -> Path:
        return home.expanduser()


def encoder_home() -> Path:
    """$VINTED_TAGGER_HOME, read at each call (tests and workers point it elsewhere)."""
    return Paths().home


# The package data: artifacts/ (the committed default model, the fine-tuned encoder weights). In a checkout
# vinted_tagger/artifacts is a link to the repository's artifacts/, in an installed package (`pip install .`)
# a copy (pyproject's package-data), so both find them the same way.
PACKAGE_DATA = Path(__file__).resolve().parent
DEFAULT_MODEL_DIR = (PACKAGE_DATA / "artifacts" / "model").resolve()


def model_dir() -> Path:
    """The model folder used when none is given: $VINTED_TAGGER_MODEL, else the packaged default model."""
    return Paths().model or DEFAULT_MODEL_DIR


def worker_environment() -> dict[str, str]:
    """The variables a worker process (a Ray actor) must see as this process does, those that are set."""
    return {name: os.environ[name] for name in WORKER_VARIABLES if name in os.environ}


class ServiceSettings(_Settings):
    """The REST service's knobs (defaults suit one small box)."""

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
        positive = [self.max_file_mb, self.max_files, self.max_batch, self.max_pending, self.encoder_workers,
                    self.decode_max_megapixels, self.decode_max_mb, self.decode_max_frames, self.heavy_decodes,
                    self.max_heavy_pending, self.shutdown_timeout_s]
        non_negative = [self.batch_window_ms, self.encoder_threads, self.decode_threads]
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
