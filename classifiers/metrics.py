"""The project's metrics, each defined once: top-k ranking and accuracy, log-loss, precision/recall/F1 and the
threshold with the best F1. Training, evaluation, fine-tuning, the notebook and the benches all call these, so
their numbers follow the same two conventions:

* Ties in a ranking: among equal scores the earlier column (the earlier class of ``classes_``) ranks first
  (a stable sort), so a top-2 never depends on the sort algorithm or the CPU's vector sort.
* 0/0 is undefined, never 0 or 1: precision with nothing predicted, recall with no positive, F1 with neither
  are NaN (``None`` in report dicts, as JSON has no NaN), and a mean over tags skips them. A defined zero
  stays zero: F1 is 0 when something was predicted or positive but nothing was found.

A tag is present when its score is >= its threshold.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


# ------------------------------------------------------------------------------------------- ranking
def top_k(scores: np.ndarray, k: int | None = None) -> np.ndarray:
    """Column indices of the ``k`` highest scores along the last axis, best first (all when k is None);
    equal scores keep their column order."""
    return np.argsort(-np.asarray(scores), axis=-1, kind="stable")[..., :k]


def top_k_accuracy(proba: np.ndarray, y: np.ndarray, k: int) -> float:
    """Share of rows whose true class index ``y`` is among the ``k`` first of ``top_k``."""
    return float(np.mean((top_k(proba, k) == np.asarray(y)[:, None]).any(axis=1)))


def log_loss(proba: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-probability of the true class (clipped at 1e-15)."""
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], 1e-15, None))))


# ----------------------------------------------------------------------------------- binary decisions
def ratio(numerator, denominator):
    """numerator / denominator, element-wise; NaN where the denominator is 0 (undefined, not 0)."""
    numerator, denominator = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    out = np.divide(numerator, denominator, out=np.full(np.broadcast(numerator, denominator).shape, np.nan),
                    where=denominator != 0)
    return float(out) if out.ndim == 0 else out


def counts(truth: np.ndarray, predicted: np.ndarray) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of boolean ``predicted`` against boolean ``truth``."""
    truth, predicted = np.asarray(truth, dtype=bool), np.asarray(predicted, dtype=bool)
    return int(np.sum(truth & predicted)), int(np.sum(~truth & predicted)), int(np.sum(truth & ~predicted))


def precision_recall_f1(tp, fp, fn) -> dict:
    """Precision, recall and F1 (= 2tp / (2tp + fp + fn) = 2PR / (P + R)) of counts, scalars or arrays
    (e.g. one per threshold or per bootstrap resample); 0/0 is NaN."""
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    return {"precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn), "f1": ratio(2 * tp, 2 * tp + fp + fn)}


def mean_defined(values: Iterable[float]) -> float:
    """Unweighted mean of the defined (not NaN, not None) values; NaN when none is."""
    defined = [float(v) for v in values if v is not None and not np.isnan(v)]
    return float(np.mean(defined)) if defined else float("nan")


def or_none(value: float) -> float | None:
    """A report's form of a metric: None where it is undefined (NaN)."""
    return None if np.isnan(value) else float(value)


def best_f1_threshold(y: np.ndarray, score: np.ndarray) -> dict:
    """The decision threshold (present when score >= threshold) with the best F1, and its scores.

    The candidates are the distinct scores (scikit-learn's precision-recall curve); each has at least one
    predicted positive, and its F1 is the harmonic mean of P and R, 0 where both are 0 (nothing found).
    Among equal F1s the lowest threshold wins.
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve  # training only: prediction stays light

    precision, recall, thresholds = precision_recall_curve(y, score)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    best = int(np.argmax(f1))
    return {
        "threshold": float(thresholds[best]),
        "precision": float(precision[best]),
        "recall": float(recall[best]),
        "f1": float(f1[best]),
        "average_precision": float(average_precision_score(y, score)),
    }
