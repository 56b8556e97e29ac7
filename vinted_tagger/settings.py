"""Every setting read from the environment, with its default: ``VINTED_TAGGER_<NAME>`` variables.

    VINTED_TAGGER_HOME    where exported encoders live (default ~/.cache/vinted-tagger)
    VINTED_TAGGER_MODEL   the default model folder (default: the packaged artifacts/model)
    VINTED_TAGGER_<FIELD> the service's knobs, one per field of ``service.settings.Settings`` (built on ``_Settings``)

pydantic-settings reads and validates them; an empty or blank variable counts as unset. A bad value is a
``SettingsError``: one line naming the variable, which every command line reports as a user's mistake.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError, field_validator
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
            raise SettingsError(validation_message(error)) from None

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        return init_settings, _Environment(settings_cls)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides):
        """Defaults, then this process's variables, then those of ``environ`` (tests), then ``overrides``."""
        values = {} if environ is None else _Environment(cls, environ)()
        return cls(**{**values, **overrides})


def validation_message(error: ValidationError) -> str:
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
