"""How often the same heads decide the same from two embeddings of the same images (the runtime bench's
measure of whether two encoder variants are interchangeable)."""

from __future__ import annotations

import numpy as np

from classifiers.predict import Tagger


def decision_agreement(tagger: Tagger, vectors: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Share of rows on which the same heads decide the same from two embeddings of the same images (e.g.
    fp32 and bf16): ``category1`` and each tag's 0/1 decision."""
    first, second = tagger.predict_vectors(vectors), tagger.predict_vectors(other)
    columns = ["category1", *tagger.tags]
    return {name: float((first[name].to_numpy() == second[name].to_numpy()).mean()) for name in columns}


def top2_set_agreement(tagger: Tagger, vectors: np.ndarray, other: np.ndarray) -> float:
    """Share of rows whose two proposed categories are the same pair, in either order (the seller sees both)."""
    first, second = tagger.predict_vectors(vectors), tagger.predict_vectors(other)
    same = ((first["category1"] == second["category1"]) & (first["category2"] == second["category2"])) | (
        (first["category1"] == second["category2"]) & (first["category2"] == second["category1"]))
    return float(same.mean())
