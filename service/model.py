"""The trained model as the service uses it: the encoder and the heads, loaded once and warmed, plus their facts.

The encoder runs the variant ``embed`` would pick (fastest that keeps the model's decisions), compiled for
the shapes the service uses: one image, and each micro-batch size up to ``max_batch``.
"""

from __future__ import annotations

import hashlib
import queue
from pathlib import Path

import numpy as np

from classifiers.artifacts import MODEL_FILE
from classifiers.predict import Tagger
from embed.cache import check_same_encoder
from embed.runtime import Encoder
from service.schemas import CategoryScore, EncoderInfo, ImagePrediction, ModelInfo, TagDecision


TRAINING_KEYS = ("head", "seed", "rows", "group_aware_cv", "versions")


def model_id_of(model_dir: Path) -> str:
    """A short id of the trained model: the hash of its model.json, which names the training data
    (fingerprint), the encoder, the head choices and the thresholds. Clients can tell which model answered."""
    return hashlib.sha256((Path(model_dir) / MODEL_FILE).read_bytes()).hexdigest()[:12]


class ModelRuntime:
    """Heads plus one or more encoder sessions.

    Each encoder worker thread borrows a session of its own: concurrent calls on one session share its
    intra-op thread pool and slow each other down, while separate sessions run side by side.
    """

    def __init__(self, tagger: Tagger, encoders: list[Encoder], model_dir: Path):
        self.tagger, self.model_dir = tagger, Path(model_dir)
        self.encoder = encoders[0]  # for decoding and facts; every session is the same model
        self._free: queue.SimpleQueue[Encoder] = queue.SimpleQueue()
        for encoder in encoders:
            self._free.put(encoder)
        self.sessions = len(encoders)
        self.classes = list(tagger.classes)
        self.tags = list(tagger.tags)
        self.thresholds = tagger.model.thresholds()
        self.model_id = model_id_of(model_dir)

    @classmethod
    def load(cls, model_dir: Path, encoder_threads: int = 0, sessions: int = 1, runtime: str = "auto",
             precision: str = "auto", max_batch: int = 1) -> ModelRuntime:
        tagger = Tagger.load(model_dir)
        batches = tuple(range(1, max_batch + 1))  # static shapes: every micro-batch size runs unpadded
        first = Encoder.load(tagger.encoder_spec, encoder_threads or None, runtime, precision, batches, tagger.runtime)
        # The other sessions run exactly what the first one chose (no second fallback message).
        variant = first.variant
        encoders = [first] + [Encoder.load(tagger.encoder_spec, encoder_threads or None, variant.runtime,
                                           variant.precision, batches, tagger.runtime) for _ in range(sessions - 1)]
        check_same_encoder(tagger.encoder_spec, first.spec.to_dict(), "the image encoder")
        return cls(tagger, encoders, model_dir)

    def warm(self) -> None:
        """Every compiled shape of every session once, and the heads: buffers are allocated now, not on a
        request."""
        size = self.encoder.spec.input_size
        borrowed = [self._free.get() for _ in range(self.sessions)]
        try:
            for encoder in borrowed:
                encoder.warm()
                self.tagger.scores(encoder.encode(np.zeros((1, size, size, 3), np.uint8)))
        finally:
            for encoder in borrowed:
                self._free.put(encoder)

    def decode(self, data: bytes) -> np.ndarray:
        return self.encoder.pixels(data)

    def run_batch(self, pixels: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """uint8 (n, S, S, 3) -> per image (category probabilities, tag scores). Runs in a worker thread."""
        encoder = self._free.get()  # never waits: there are as many sessions as worker threads
        try:
            vectors = encoder.encode(pixels)
        finally:
            self._free.put(encoder)
        proba, tag_scores = self.tagger.scores(vectors)
        return list(zip(np.asarray(proba, np.float64), np.asarray(tag_scores, np.float64)))

    def prediction(self, row: tuple[np.ndarray, np.ndarray], k: int, index: int, filename: str | None):
        described = self.tagger.describe(*row)  # the decisions are the Tagger's, as in `classify predict`
        top = list(described["categories"].items())[:k]
        return ImagePrediction(
            index=index,
            filename=filename,
            category1=described["category1"],
            category2=described["category2"],
            categories=[CategoryScore(category=name, probability=p) for name, p in top],
            tags={tag: TagDecision(score=d["score"], threshold=d["threshold"], present=int(d["present"]))
                  for tag, d in described["tags"].items()},
        )

    def info(self) -> ModelInfo:
        spec, training = self.encoder.spec, self.tagger.model.info
        return ModelInfo(
            model_id=self.model_id,
            model_dir=str(self.model_dir),
            encoder=EncoderInfo(name=spec.name, input_size=spec.input_size, dim=spec.dim, weights_sha256=spec.sha256,
                                runtime=self.encoder.variant.runtime, precision=self.encoder.variant.precision),
            classes=self.classes,
            tags=self.tags,
            thresholds={tag: float(t) for tag, t in zip(self.tags, self.thresholds)},
            fingerprint=training.get("data_fingerprint"),
            training={key: training[key] for key in TRAINING_KEYS if key in training},
        )
