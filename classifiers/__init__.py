"""Classical heads on cached image embeddings: top-2 category and pattern tags.

    from classifiers import train, save_model, Tagger
    save_model(train("data.parquet", "CACHE"), "artifacts/model")
    Tagger.load("artifacts/model").predict_vectors(vectors)

Names are imported on first use, so that prediction never imports scikit-learn (only training does).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "train": "classifiers.train",
    "TaggerModel": "classifiers.model",
    "save_model": "classifiers.artifacts",
    "load_model": "classifiers.artifacts",
    "DEFAULT_MODEL_DIR": "classifiers.artifacts",
    "Tagger": "classifiers.predict",
    "predict_cache": "classifiers.predict",
    "evaluate": "classifiers.evaluate",
    "format_report": "classifiers.evaluate",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'classifiers' has no attribute {name!r}")
