"""What a model folder holds, in memory: the heads and the identity of their encoder (prediction wraps it in
``classifiers.predict.Tagger``, the one model object of the CLI and the service)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from classifiers.scorers import CategoryScorer, LinearScores, TagScorer, column_index, sigmoid, softmax

FORMAT_VERSION = 1


@dataclass
class TaggerModel:
    """A trained tagger: the category head, one head per tag (in training order) and what made them."""

    category: CategoryScorer
    tags: dict[str, TagScorer]
    encoder: dict  # the encoder spec of the cache the heads were trained on
    info: dict = field(default_factory=dict)  # data fingerprint, rows, CV scores, choices, versions
    timing: dict = field(default_factory=dict)  # seconds per head: kept apart, it changes run to run
    _fused_heads: tuple | None = field(default=None, init=False, repr=False, compare=False)

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
        fused = self._fused()
        if fused is not None:  # every head linear: one matmul for all of them
            weight, bias = fused
            logits = np.asarray(vectors @ weight + bias, dtype=np.float64)
            classes = len(self.classes)
            return softmax(logits[:, :classes] / self.category.temperature), sigmoid(logits[:, classes:])
        category = self.category.proba(vectors)
        tags = np.column_stack([head.proba(vectors) for head in self.tags.values()]) if self.tags else \
            np.zeros((len(vectors), 0))
        return category, tags

    def _fused(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(dim, classes + tags) float32 weights and their biases when every head is linear, else None; a
        tag head's column selection becomes zero weights outside it. Built once."""
        if self._fused_heads is None:
            heads = [self.category, *self.tags.values()]
            if not all(isinstance(head.scores, LinearScores) for head in heads) or \
                    any(head.scores.weight.shape[1] != 1 for head in self.tags.values()):
                self._fused_heads = ()
            else:
                blocks = [self.category.scores.weight]
                for head in self.tags.values():
                    block = np.zeros((self.encoder["dim"], head.scores.weight.shape[1]), np.float32)
                    block[slice(None) if head.columns is None else column_index(head.columns)] = head.scores.weight
                    blocks.append(block)
                self._fused_heads = (np.ascontiguousarray(np.hstack(blocks)),
                                     np.concatenate([head.scores.bias for head in heads]))
        return self._fused_heads or None

    def thresholds(self) -> np.ndarray:
        return np.array([head.threshold for head in self.tags.values()], dtype=np.float64)
