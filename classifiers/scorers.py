"""What a trained head keeps for prediction: numpy arrays (logistic heads) or a LightGBM text model.

Nothing here imports scikit-learn, so serving needs only numpy (and lightgbm for LightGBM heads). Training
(``classifiers.heads``) builds these objects; ``classifiers.artifacts`` saves and loads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class LinearScores:
    """Standardise, then an affine map: logits = (x - mean) / scale @ coef.T + intercept."""

    mean: np.ndarray  # (dim,)
    scale: np.ndarray  # (dim,)
    coef: np.ndarray  # (k, dim); k = 1 for a binary head
    intercept: np.ndarray  # (k,)

    kind = "logreg"

    def __post_init__(self) -> None:
        # The standardisation folded into the map, once: one float32 matmul per batch, no standardised copy
        # of the batch. Sums are formed in float64 so that the folded weights round only once.
        coef = np.asarray(self.coef, np.float64) / np.asarray(self.scale, np.float64)
        self.weight = np.ascontiguousarray(coef.T, dtype=np.float32)  # (dim, k)
        self.bias = (np.asarray(self.intercept, np.float64) - coef @ np.asarray(self.mean, np.float64)).astype(np.float32)

    def raw(self, vectors: np.ndarray) -> np.ndarray:
        return np.asarray(vectors, dtype=np.float32) @ self.weight + self.bias

    def arrays(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "scale": self.scale, "coef": self.coef, "intercept": self.intercept}


@dataclass
class LightGBMScores:
    """A LightGBM booster's raw scores (multiclass: one column per class; binary: one column)."""

    model_text: str
    booster: object = field(default=None, repr=False)

    kind = "lightgbm"

    def __post_init__(self) -> None:
        if self.booster is None:
            import lightgbm  # only LightGBM heads need it

            self.booster = lightgbm.Booster(model_str=self.model_text)

    def raw(self, vectors: np.ndarray) -> np.ndarray:
        scores = self.booster.predict(np.asarray(vectors, dtype=np.float32), raw_score=True)
        return np.asarray(scores, dtype=np.float64).reshape(len(vectors), -1)


def column_index(ranges: tuple[tuple[int, int], ...]) -> np.ndarray:
    """The column numbers of [start, stop) ranges, in order."""
    return np.concatenate([np.arange(start, stop) for start, stop in ranges])


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def sigmoid(z: np.ndarray) -> np.ndarray:
    # Written with exp(-|z|) so that large |z| neither overflows nor loses precision.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@dataclass
class CategoryScorer:
    """Category probabilities: softmax(raw / temperature), columns in ``classes`` order."""

    classes: list[str]
    scores: LinearScores | LightGBMScores
    temperature: float = 1.0

    def proba(self, vectors: np.ndarray) -> np.ndarray:
        return softmax(np.asarray(self.scores.raw(vectors), dtype=np.float64) / self.temperature)


@dataclass
class TagScorer:
    """One pattern tag: probability sigmoid(raw), present when probability >= threshold.

    ``columns``: the [start, stop) ranges of the embedding the head reads (None: all of it).
    """

    name: str
    scores: LinearScores | LightGBMScores
    threshold: float = 0.5
    columns: tuple[tuple[int, int], ...] | None = None
    _index: np.ndarray | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        self._index = None if self.columns is None else column_index(self.columns)  # once, not per request

    def proba(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors)
        if self._index is not None:
            vectors = vectors[:, self._index]
        return sigmoid(np.asarray(self.scores.raw(vectors), dtype=np.float64)[:, 0])
