"""Training of the heads: a category head (multi-class) and one binary head per pattern tag.

Every head is chosen and calibrated on out-of-fold (OOF) predictions from group-aware folds, so that a
seller's photos never sit on both sides of a split:

* logistic heads standardise the features, pick C from a small grid by OOF score (one warm-started
  L-BFGS path per fold, as scikit-learn's LogisticRegressionCV does) and refit on all rows;
* LightGBM heads pick their number of rounds by early stopping inside each fold;
* the category head then fits a temperature on the OOF logits (calibrated probabilities); a tag head picks
  the decision threshold that maximises OOF F1, so a rare tag gets a threshold below 0.5 when that pays.

The estimators follow scikit-learn's contract (parameters in ``__init__``, ``fit`` returns self, learned
state ends in ``_``); what prediction needs is in ``scorer_`` (``classifiers.scorers``, numpy only).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Sequence

import numpy as np
from joblib import Parallel, delayed
from scipy.optimize import minimize_scalar
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from threadpoolctl import threadpool_limits

from classifiers.metrics import best_f1_threshold, log_loss, top_k_accuracy
from classifiers.scorers import (CategoryScorer, LightGBMScores, LinearScores, TagScorer, column_index, sigmoid,
                                 softmax)

HEAD_KINDS = ("logreg", "lightgbm", "auto")
# Inverse L2 strength on standardised features; CV picks one. Each grid brackets the out-of-fold optimum
# found on the stand-in data (`classify train` prints the C it chose), as wider grids only cost time.
CATEGORY_CS = (0.001, 0.003, 0.01)
TAG_CS = (0.0003, 0.001, 0.003)
N_SPLITS = 5
SEED = 0
Folds = list[tuple[np.ndarray, np.ndarray]]
Columns = Sequence[tuple[int, int]]  # [start, stop) ranges of the embedding a head reads


def check_head_kind(kind: str) -> str:
    if kind not in HEAD_KINDS:
        raise ValueError(f"unknown head {kind!r}; valid heads: {', '.join(HEAD_KINDS)}")
    return kind


# ---------------------------------------------------------------------------------------------- folds


def make_folds(y: np.ndarray, groups: np.ndarray | None, n_splits: int = N_SPLITS, seed: int = SEED) -> Folds:
    """Stratified folds; with groups, every group lies in exactly one validation fold."""
    units = len(np.unique(groups)) if groups is not None else len(y)
    n_splits = min(n_splits, units)
    if n_splits < 2:
        raise ValueError(f"cross-validation needs at least 2 groups or rows, got {units}")
    if groups is None or units == len(y):
        # One row per group is the plain stratified case; StratifiedGroupKFold would reach the same kind of
        # split through a Python loop over thousands of groups, slow for every head.
        splitter, groups = StratifiedKFold(n_splits, shuffle=True, random_state=seed), None
    else:
        splitter = StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # Rare classes (fewer members than folds) are expected; folds missing a class are handled below.
        warnings.filterwarnings("ignore", message="The least populated class")
        return [(train, val) for train, val in splitter.split(np.zeros((len(y), 1)), y, groups)]


# ------------------------------------------------------------------------- calibration and CV scores


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The T > 0 that minimises the log-loss of softmax(logits / T) (Guo et al., 2017)."""
    result = minimize_scalar(
        lambda log_t: log_loss(softmax(logits / np.exp(log_t)), y), bounds=(-3.0, 3.0), method="bounded"
    )
    return float(np.exp(result.x))


def category_key(cv: dict) -> tuple:
    # Sellers see a ranking (the top 2), not one answer: out-of-fold log-loss scores the whole ranking and is
    # far less noisy than top-1 accuracy, whose differences between C values are a few rows. Higher is better.
    return (-round(cv["logloss"], 4), round(cv["top2"], 3))


def tag_key(cv: dict) -> tuple:
    return (round(cv["f1"], 3), cv["average_precision"])


def category_cv(logits: np.ndarray, y: np.ndarray, seen: np.ndarray | None = None) -> dict:
    """OOF scores after temperature scaling. ``seen``: rows whose class their fold model was trained on.

    Rows of a class that its fold never saw count as misses in top-k, but are left out of the temperature
    and the log-loss: their near-zero probability says nothing about calibration and would inflate T.
    """
    seen = np.ones(len(y), dtype=bool) if seen is None else seen
    temperature = fit_temperature(logits[seen], y[seen])
    proba = softmax(logits / temperature)
    return {
        "top1": top_k_accuracy(proba, y, 1),
        "top2": top_k_accuracy(proba, y, 2),
        "logloss": log_loss(proba[seen], y[seen]),
        "temperature": temperature,
    }


# --------------------------------------------------------------------------------------- base class


class _Head(BaseEstimator):
    """Shared plumbing: the folds (``cv``: a number of folds or explicit (train, validation) index pairs)."""

    kind = ""

    def _keep(self, arguments: dict) -> None:
        """Store ``__init__``'s arguments unchanged, one attribute each (scikit-learn's contract)."""
        for name, value in arguments.items():
            if name not in ("self", "__class__"):
                setattr(self, name, value)

    def _folds(self, y: np.ndarray, groups: np.ndarray | None) -> Folds:
        if isinstance(self.cv, int):
            return make_folds(y, groups, self.cv, self.seed)
        return [(np.asarray(train), np.asarray(val)) for train, val in self.cv]


def _category_labels(y: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted class names (the column order of every probability matrix) and each row's class index."""
    classes, index = np.unique(np.asarray(y, dtype=str), return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"the category head needs at least 2 classes, got {list(classes)}")
    return classes, index


def _standardise(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float32)
    mean = X.mean(axis=0, dtype=np.float64).astype(np.float32)
    scale = X.std(axis=0, dtype=np.float64).astype(np.float32)
    scale[scale < 1e-8] = 1.0  # a constant feature carries nothing; leave it at zero
    return (X - mean) / scale, mean, scale


def _logreg_path(X: np.ndarray, y: np.ndarray, Cs: Sequence[float], max_iter: int) -> list[tuple]:
    """(classes, coef, intercept) for each C, fitted in increasing C, each warm-started from the last."""
    model = LogisticRegression(C=Cs[0], max_iter=max_iter, tol=1e-4, warm_start=True)
    path = []
    for C in sorted(Cs):
        model.set_params(C=C).fit(X, y)
        path.append((model.classes_.copy(), model.coef_.copy(), model.intercept_.copy()))
    return path


@contextmanager
def _fitting():
    """One BLAS thread per fit, and no ConvergenceWarning (max_iter is a deliberate cap, see the heads).

    Set up here, in the calling thread, because warning filters are process-wide and
    ``warnings.catch_warnings`` inside worker threads would race.
    """
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _fit_paths(function, folds: Folds, n_rows: int, n_jobs: int) -> tuple[list, list]:
    """``function(rows)`` on each fold's training rows and on all rows: (fold results, all-rows result).

    The all-rows path (every C) runs in the same pool as the folds rather than after them, once C is
    chosen: the cores stay busy, and its entry at the chosen C is the same fit, since each C of a path
    warm-starts from the smaller ones before it.
    """
    # Threads: the work is BLAS and Cython that release the GIL; one BLAS thread each avoids
    # oversubscribing the cores (and keeps results independent of the machine's load). The biggest job,
    # all rows, goes first, so that no core waits for it at the end.
    jobs = [np.arange(n_rows)] + [train for train, _ in folds]
    with _fitting():
        results = Parallel(n_jobs=min(n_jobs, len(jobs)), prefer="threads")(delayed(function)(j) for j in jobs)
    return results[1:], results[0]


# ------------------------------------------------------------------------------------ category heads


class CategoryLogReg(_Head):
    """Multinomial logistic regression on standardised features, C by group-aware CV, temperature-scaled.

    ``max_iter`` caps L-BFGS per C, and the CV that picks C scores exactly what the cap produces. The cap is
    the training-time budget: more iterations barely lower the out-of-fold log-loss and cost time in
    proportion, and a converged fit scored no better (bench/embedding_variants.py and bench/heads_bench.py
    measure both).
    """

    kind = "logreg"

    def __init__(self, Cs: Sequence[float] = CATEGORY_CS, cv: int | Folds = N_SPLITS, seed: int = SEED,
                 max_iter: int = 20, n_jobs: int = 2):
        self._keep(locals())

    def fit(self, X: np.ndarray, y: Sequence[str], groups: np.ndarray | None = None) -> CategoryLogReg:
        self.classes_, yi = _category_labels(y)
        Xs, mean, scale = _standardise(X)
        folds = self._folds(yi, groups)
        Cs = sorted(self.Cs)
        paths, full = _fit_paths(lambda rows: _logreg_path(Xs[rows], yi[rows], Cs, self.max_iter), folds, len(yi),
                                 self.n_jobs)
        seen = np.ones(len(yi), dtype=bool)
        for (_, val), path in zip(folds, paths):
            seen[val] = np.isin(yi[val], path[0][0])
        per_c, oof = {}, {}
        for i, C in enumerate(Cs):
            oof[C] = np.zeros((len(yi), len(self.classes_)))
            for (_, val), path in zip(folds, paths):
                oof[C][val] = _multiclass_logits(Xs[val], *path[i], len(self.classes_))
            per_c[C] = category_cv(oof[C], yi, seen)
        self.C_ = max(Cs, key=lambda C: category_key(per_c[C]))
        self.temperature_ = per_c[self.C_]["temperature"]
        self.oof_ = softmax(oof[self.C_] / self.temperature_)  # calibrated out-of-fold probabilities
        self.cv_ = {**per_c[self.C_], "C": self.C_, "folds": len(folds),
                    "per_C": {str(C): per_c[C] for C in Cs}}
        classes, coef, intercept = full[Cs.index(self.C_)]
        coef, intercept = _one_row_per_class(classes, coef, intercept)
        scores = LinearScores(mean, scale, coef.astype(np.float32), intercept.astype(np.float32))
        self.scorer_ = CategoryScorer(list(self.classes_), scores, self.temperature_)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.scorer_.proba(X)


def _one_row_per_class(classes: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> tuple:
    if len(classes) == 2 and len(coef) == 1:  # scikit-learn keeps one row for two classes: logit(b) - logit(a)
        return np.vstack([-coef, coef]) / 2, np.array([-intercept[0], intercept[0]]) / 2
    return coef, intercept


def _multiclass_logits(X: np.ndarray, classes: np.ndarray, coef: np.ndarray, intercept: np.ndarray,
                       n_classes: int) -> np.ndarray:
    """Logits over all classes from a fold model that may have seen only some of them."""
    coef, intercept = _one_row_per_class(classes, coef, intercept)
    seen = X @ coef.T + intercept
    # A class absent from a fold's training rows (all its uploaders in the validation fold) gets a logit
    # far below the others: the fold model cannot predict it, and the CV score should say so.
    logits = np.repeat(seen.min(axis=1, keepdims=True) - 20.0, n_classes, axis=1)
    logits[:, classes] = seen
    return logits


class CategoryLightGBM(_Head):
    """LightGBM multi-class head: rounds by early stopping inside the folds, then temperature-scaled."""

    kind = "lightgbm"

    def __init__(self, n_estimators: int = 200, learning_rate: float = 0.1, num_leaves: int = 15,
                 feature_fraction: float = 0.2, min_child_samples: int = 10, cv: int | Folds = N_SPLITS,
                 seed: int = SEED, n_jobs: int = 1):
        self._keep(locals())

    def fit(self, X: np.ndarray, y: Sequence[str], groups: np.ndarray | None = None) -> CategoryLightGBM:
        self.classes_, yi = _category_labels(y)
        X = np.asarray(X, dtype=np.float32)
        params = _lgb_params(self, {"objective": "multiclass", "num_class": len(self.classes_)})
        folds = self._folds(yi, groups)
        logits, self.n_rounds_ = _lgb_oof(params, X, yi, folds, self.n_estimators)
        self.cv_ = {**category_cv(logits, yi), "rounds": self.n_rounds_, "folds": len(folds)}
        self.temperature_ = self.cv_["temperature"]
        self.oof_ = softmax(logits / self.temperature_)
        scores = _lgb_fit(params, X, yi, self.n_rounds_)
        self.scorer_ = CategoryScorer(list(self.classes_), scores, self.temperature_)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.scorer_.proba(X)


def _lgb_params(head, extra: dict) -> dict:
    return {
        "learning_rate": head.learning_rate,
        "num_leaves": head.num_leaves,
        "feature_fraction": head.feature_fraction,
        "min_data_in_leaf": head.min_child_samples,
        "lambda_l2": 1.0,
        "max_bin": 63,  # coarser histograms: fewer bins to scan on thousands of dense features
        "seed": head.seed,
        "deterministic": True,  # with force_col_wise: same data and threads => same trees
        "force_col_wise": True,
        # One thread by default: LightGBM's OpenMP threads spin-wait, which on a busy machine can stretch a
        # short fit many times over. Parallelism belongs to the caller (one head per process).
        "num_threads": head.n_jobs,
        "verbose": -1,
        **extra,
    }


def _lgb_oof(params: dict, X: np.ndarray, y: np.ndarray, folds: Folds, max_rounds: int) -> tuple[np.ndarray, int]:
    """OOF raw scores, each fold stopped early on its validation part, and the mean best round count."""
    import lightgbm

    width = params.get("num_class", 1)
    raw = np.zeros((len(y), width))
    rounds = []
    for train, val in folds:
        booster = lightgbm.train(
            params,
            lightgbm.Dataset(X[train], y[train], free_raw_data=True),
            num_boost_round=max_rounds,
            valid_sets=[lightgbm.Dataset(X[val], y[val])],
            callbacks=[lightgbm.early_stopping(20, verbose=False)],
        )
        best = booster.best_iteration or max_rounds
        raw[val] = np.asarray(booster.predict(X[val], num_iteration=best, raw_score=True)).reshape(len(val), width)
        rounds.append(best)
    return raw, max(1, int(round(float(np.mean(rounds)))))


def _lgb_fit(params: dict, X: np.ndarray, y: np.ndarray, rounds: int) -> LightGBMScores:
    import lightgbm

    booster = lightgbm.train(params, lightgbm.Dataset(X, y), num_boost_round=rounds)
    return LightGBMScores(booster.model_to_string(), booster)


# ----------------------------------------------------------------------------------------- tag heads


class _TagHead(_Head):
    """A tag head reads ``columns`` of the embedding ([start, stop) ranges; None: all of it): ``fit`` and
    ``predict_proba`` take whole embeddings, and its scorer keeps the columns, so the saved head reads what
    the fit read."""

    def _inputs(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        return X if self.columns is None else X[:, column_index(self.columns)]

    def _scorer(self, scores: LinearScores | LightGBMScores) -> TagScorer:
        columns = None if self.columns is None else tuple((int(a), int(b)) for a, b in self.columns)
        return TagScorer(self.name, scores, self.threshold_, columns)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.scorer_.proba(X)


class TagLogReg(_TagHead):
    """Binary logistic regression for one tag: C by OOF F1, threshold maximising OOF F1, refit on all rows."""

    kind = "logreg"

    def __init__(self, name: str = "tag", Cs: Sequence[float] = TAG_CS, cv: int | Folds = N_SPLITS,
                 seed: int = SEED, max_iter: int = 100, n_jobs: int = 2, columns: Columns | None = None):
        self._keep(locals())

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> TagLogReg:
        y = _binary_labels(y, self.name)
        Xs, mean, scale = _standardise(self._inputs(X))
        folds = self._folds(y, groups)
        Cs = sorted(self.Cs)
        paths, full = _fit_paths(lambda rows: _binary_path(Xs[rows], y[rows], Cs, self.max_iter), folds, len(y),
                                 self.n_jobs)
        per_c, oof = {}, {}
        for i, C in enumerate(Cs):
            oof[C] = np.zeros(len(y))
            for (_, val), path in zip(folds, paths):
                coef, intercept = path[i]
                oof[C][val] = sigmoid(Xs[val] @ coef[0] + intercept[0])
            per_c[C] = best_f1_threshold(y, oof[C])
        self.C_ = max(Cs, key=lambda C: tag_key(per_c[C]))
        self.oof_ = oof[self.C_]  # out-of-fold probabilities the threshold was chosen on
        self.threshold_ = per_c[self.C_]["threshold"]
        self.cv_ = {**per_c[self.C_], "C": self.C_, "folds": len(folds), "per_C": {str(C): per_c[C] for C in Cs}}
        coef, intercept = full[Cs.index(self.C_)]
        self.scorer_ = self._scorer(LinearScores(mean, scale, coef.astype(np.float32), intercept.astype(np.float32)))
        return self


def _binary_labels(y: np.ndarray, name: str) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    if np.isnan(y).any():
        raise ValueError(f"tag {name!r}: unknown (NaN) labels must be dropped before fitting, not read as 0")
    if len(np.unique(y)) < 2:
        raise ValueError(f"tag {name!r} needs both 0 and 1 among its known labels, got only {np.unique(y)}")
    return y.astype(np.int64)


def _binary_path(X: np.ndarray, y: np.ndarray, Cs: Sequence[float], max_iter: int) -> list[tuple]:
    if len(np.unique(y)) < 2:
        # A fold whose training part has one value (all positives of a few uploaders held out):
        # predict the prior, which scores that fold honestly as uninformative.
        prior = (y.sum() + 0.5) / (len(y) + 1.0)
        return [(np.zeros((1, X.shape[1])), np.array([np.log(prior / (1 - prior))]))] * len(Cs)
    return [(coef, intercept) for _, coef, intercept in _logreg_path(X, y, Cs, max_iter)]


class TagLightGBM(_TagHead):
    """Binary LightGBM head for one tag: rounds by early stopping in the folds, threshold by OOF F1."""

    kind = "lightgbm"

    def __init__(self, name: str = "tag", n_estimators: int = 200, learning_rate: float = 0.1,
                 num_leaves: int = 15, feature_fraction: float = 0.2, min_child_samples: int = 10,
                 cv: int | Folds = N_SPLITS, seed: int = SEED, n_jobs: int = 1, columns: Columns | None = None):
        self._keep(locals())

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> TagLightGBM:
        y = _binary_labels(y, self.name)
        X = np.asarray(self._inputs(X), dtype=np.float32)
        params = _lgb_params(self, {"objective": "binary"})
        folds = self._folds(y, groups)
        raw, self.n_rounds_ = _lgb_oof(params, X, y, folds, self.n_estimators)
        self.oof_ = sigmoid(raw[:, 0])
        self.cv_ = {**best_f1_threshold(y, self.oof_), "rounds": self.n_rounds_, "folds": len(folds)}
        self.threshold_ = self.cv_["threshold"]
        self.scorer_ = self._scorer(_lgb_fit(params, X, y, self.n_rounds_))
        return self


# ------------------------------------------------------------------------------------- choosing heads


def fit_category_head(kind: str, X: np.ndarray, y: Sequence[str], groups: np.ndarray | None,
                      seed: int = SEED, n_jobs: int = 2) -> tuple[_Head, dict]:
    """Fit the category head of ``kind``; ``auto`` fits both kinds on the same folds and keeps the better."""
    check_head_kind(kind)
    y = np.asarray(y, dtype=str)
    folds = make_folds(np.unique(y, return_inverse=True)[1], groups, N_SPLITS, seed)
    candidates = {"logreg": CategoryLogReg(cv=folds, seed=seed, n_jobs=n_jobs),
                  "lightgbm": CategoryLightGBM(cv=folds, seed=seed)}
    return _choose(kind, candidates, X, y, groups, category_key, ("logloss", "top2"))


def fit_tag_head(kind: str, name: str, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None,
                 seed: int = SEED, n_jobs: int = 2, columns: Columns | None = None) -> tuple[_Head, dict]:
    """Fit one tag's head of ``kind`` on ``columns`` of X; ``auto`` fits both kinds on the same folds and keeps
    the better F1."""
    check_head_kind(kind)
    y = _binary_labels(y, name)
    folds = make_folds(y, groups, N_SPLITS, seed)
    candidates = {"logreg": TagLogReg(name, cv=folds, seed=seed, n_jobs=n_jobs, columns=columns),
                  "lightgbm": TagLightGBM(name, cv=folds, seed=seed, columns=columns)}
    return _choose(kind, candidates, X, y, groups, tag_key, ("f1", "average_precision"))


def _choose(kind: str, candidates: dict[str, _Head], X, y, groups, key, metrics: tuple[str, str]) -> tuple:
    """The requested head, or with ``auto`` every candidate (same folds: a fair race) and the best by ``key``."""
    if kind != "auto":
        return candidates[kind].fit(X, y, groups), {"kind": kind, "reason": f"{kind} requested"}
    fitted = {name: head.fit(X, y, groups) for name, head in candidates.items()}
    best = max(fitted, key=lambda name: key(fitted[name].cv_))
    scores = {name: {k: v for k, v in head.cv_.items() if k != "per_C"} for name, head in fitted.items()}
    versus = ", ".join(f"{name} {scores[name][metrics[0]]:.3f}/{scores[name][metrics[1]]:.3f}" for name in fitted)
    reason = f"auto: best out-of-fold {metrics[0]} (then {metrics[1]}): {versus}"
    return fitted[best], {"kind": best, "reason": reason, "candidates": scores}
