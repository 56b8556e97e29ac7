"""Classical heads on cached image embeddings: top-2 category and pattern tags.

    from classifiers.train import train
    from classifiers.artifacts import save_model
    from classifiers.predict import Tagger

    save_model(train("data.parquet", "CACHE"), "artifacts/model")
    Tagger.load("artifacts/model").predict_vectors(vectors)

Prediction (``classifiers.predict``) needs numpy only; scikit-learn is imported by training alone.
``Tagger`` is re-exported here because it is the one name most users need.
"""

from classifiers.predict import Tagger

__all__ = ["Tagger"]
