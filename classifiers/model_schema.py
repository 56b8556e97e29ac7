"""What a valid ``model.json`` is (a pydantic schema), and the checks of each head file against it.

Loading a model validates, before anything predicts: types (a threshold given as a string is refused, not
converted), ranges (thresholds finite in (0, 1), temperature finite and > 0), names (classes and tags unique,
head files named as save_model names them, a sha256 for each), tag column ranges inside the embedding, and
then every head's arrays: shapes against the classes, the tag's columns and the encoder's dimension, finite
values. Every refusal is a ModelError (a ValueError) whose message names the field, e.g.
``model.json: tags[1].threshold: Input should be less than 1``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from classifiers.model import FORMAT_VERSION
from classifiers.scorers import LightGBMScores, LinearScores

Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
HeadFile = Annotated[str, StringConstraints(pattern=r"^(category|tag-[A-Za-z0-9_.-]+)\.(npz|lgb\.txt)$")]
Name = Annotated[str, StringConstraints(min_length=1)]
Finite = Field(allow_inf_nan=False)


class ModelError(ValueError):
    """A model folder that is incomplete, inconsistent or tampered with."""


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class EncoderFields(BaseModel):
    """The encoder spec: only what the heads depend on is checked here (the runtime checks the rest)."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    name: Name
    dim: int = Field(gt=0)


class CategoryFields(_Strict):
    classes: list[Name] = Field(min_length=2)
    temperature: Annotated[float, Finite, Field(gt=0)]
    file: HeadFile
    sha256: Sha256

    @model_validator(mode="after")
    def _unique(self):
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("classes must be unique")
        return self


class TagFields(_Strict):
    name: Name
    threshold: Annotated[float, Finite, Field(gt=0, lt=1)]
    file: HeadFile
    sha256: Sha256
    columns: list[Annotated[list[int], Field(min_length=2, max_length=2)]] | None = None  # [start, stop)


class ModelDocument(_Strict):
    format_version: Literal[FORMAT_VERSION]
    encoder: EncoderFields
    category: CategoryFields
    tags: list[TagFields]
    training: dict = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self):
        names = [tag.name for tag in self.tags]
        if len(set(names)) != len(names):
            raise ValueError("tags: tag names must be unique")
        files = [self.category.file, *(tag.file for tag in self.tags)]
        if len(set(files)) != len(files):
            raise ValueError("two heads name the same file")
        for i, tag in enumerate(self.tags):
            for start, stop in tag.columns or ():
                if not 0 <= start < stop <= self.encoder.dim:
                    raise ValueError(f"tags[{i}].columns: range [{start}, {stop}) is not inside the "
                                     f"{self.encoder.dim} embedding columns")
        return self


def parse_document(path: Path) -> ModelDocument:
    """model.json -> ModelDocument; a missing key, a wrong type or a value out of range raises ModelError."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ModelError(f"{path}: not readable JSON: {error}") from None
    try:
        return ModelDocument.model_validate(raw)
    except ValidationError as error:
        raise ModelError(f"{path}: {'; '.join(_problem(e) for e in error.errors()[:5])}") from None


def _problem(error: dict) -> str:
    where = ""
    for part in error.get("loc", ()):
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    message = error.get("msg", "invalid").removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def check_heads(document: ModelDocument, heads: dict) -> None:
    """Each head's arrays against what model.json says it computes (heads: file name -> scores)."""
    dim = document.encoder.dim
    category = document.category
    _check_scores("category", heads[category.file], inputs=dim, outputs=len(category.classes))
    for i, tag in enumerate(document.tags):
        inputs = dim if tag.columns is None else sum(stop - start for start, stop in tag.columns)
        _check_scores(f"tags[{i}] ({tag.name!r})", heads[tag.file], inputs=inputs, outputs=1)


def _check_scores(field: str, scores, inputs: int, outputs: int) -> None:
    if isinstance(scores, LinearScores):
        expected = {"mean": (inputs,), "scale": (inputs,), "coef": (outputs, inputs), "intercept": (outputs,)}
        for name, shape in expected.items():
            array = getattr(scores, name)
            if array.shape != shape:
                raise ModelError(f"{field}: {name} has shape {array.shape}, expected {shape} "
                                 f"({outputs} output(s) x {inputs} embedding columns)")
            if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
                raise ModelError(f"{field}: {name} holds non-finite or non-float values")
        if not (scores.scale > 0).all():
            raise ModelError(f"{field}: scale must be > 0 everywhere")
    elif isinstance(scores, LightGBMScores):
        booster = scores.booster
        found = (booster.num_feature(), booster.num_model_per_iteration())
        if found != (inputs, outputs):
            raise ModelError(f"{field}: LightGBM model reads {found[0]} columns with {found[1]} output(s), "
                             f"expected {inputs} and {outputs}")
    else:
        raise ModelError(f"{field}: unknown head type {type(scores).__name__}")
