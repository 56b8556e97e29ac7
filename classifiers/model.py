"""The trained tagger as one object: what prediction needs, loaded from or saved to a model folder."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from classifiers.scorers import CategoryScorer, TagScorer

FORMAT_VERSION = 1


@dataclass
class TaggerModel:
    """A trained tagger: the category head, one head per tag (in training order) and what made them."""

    category: CategoryScorer
    tags: dict[str, TagScorer]
    encoder: dict  # the encoder spec of the cache the heads were trained on
    info: dict = field(default_factory=dict)  # data fingerprint, rows, CV scores, choices, versions
    timing: dict = field(default_factory=dict)  # seconds per head: kept apart, it changes run to run

    @property
    def classes(self) -> list[str]:
        return self.category.classes

    @property
    def tag_names(self) -> list[str]:
        return list(self.tags)

    def scores(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(category probabilities (n, classes), tag probabilities (n, tags)) for embedding vectors."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.encoder["dim"]:
            raise ValueError(f"expected vectors of shape (n, {self.encoder['dim']}), got {vectors.shape}")
        category = self.category.proba(vectors)
        tags = np.column_stack([head.proba(vectors) for head in self.tags.values()]) if self.tags else \
            np.zeros((len(vectors), 0))
        return category, tags

    def thresholds(self) -> np.ndarray:
        return np.array([head.threshold for head in self.tags.values()], dtype=np.float64)
